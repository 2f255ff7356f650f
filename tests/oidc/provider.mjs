// A certified OpenID Provider (the `oidc-provider` package) on loopback, for Keyhole's sign-in
// tests (tests/api/console_oidc.rs, tests/api/portal_oidc.rs). Not for anything else: its dev
// interactions accept any login with any password.
//
//   node provider.mjs <port> <keyhole-port>     (or PORT / KEYHOLE_PORT in the environment)
//
// Two confidential clients (secrets below), PKCE required: `keyhole-console`, whose only
// redirect is Keyhole's console callback, and `keyhole-portal`, whose only redirect is the
// portal's callback (and its signed-out page after logout). Accounts: `ana` is in
// `security-team`, `bo` is not; `carla` is the insurer's customer CU-1001 (claim
// `harmony_customer_id`), `dora` CU-2002, `erik` a customer with no customer id; any other
// login is an account with no groups. Prints `ready <issuer>` once listening.
import Provider from 'oidc-provider';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

const port = Number(process.argv[2] ?? process.env.PORT);
const keyholePort = Number(process.argv[3] ?? process.env.KEYHOLE_PORT);
if (!Number.isInteger(port) || !Number.isInteger(keyholePort)) {
  console.error('usage: node provider.mjs <port> <keyhole-port>');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// Fresh signing keys on every start: an RSA key (RS256, the default) and a P-256 key.
const jwk = (type, options) => generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' });
const keys = [
  { ...jwk('rsa', { modulusLength: 2048 }), use: 'sig', alg: 'RS256' },
  { ...jwk('ec', { namedCurve: 'P-256' }), use: 'sig', alg: 'ES256' },
];

const accounts = {
  ana: { email: 'ana@harmony.example', email_verified: true, name: 'Ana Analyst', groups: ['staff', 'security-team'] },
  bo: { email: 'bo@harmony.example', email_verified: true, name: 'Bo Builder', groups: ['staff'] },
  carla: { email: 'carla@example.com', email_verified: true, name: 'Carla Customer', harmony_customer_id: 'CU-1001' },
  dora: { email: 'dora@example.com', email_verified: true, name: 'Dora Customer', harmony_customer_id: 'CU-2002' },
  erik: { email: 'erik@example.com', email_verified: true, name: 'Erik Nonumber' },
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'keyhole-console',
    client_secret: 'keyhole-console-test-secret-0123456789',
    redirect_uris: [`http://127.0.0.1:${keyholePort}/console/oidc/callback`],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }, {
    client_id: 'keyhole-portal',
    client_secret: 'keyhole-portal-test-secret-0123456789',
    redirect_uris: [`http://127.0.0.1:${keyholePort}/portal/oidc/callback`],
    post_logout_redirect_uris: [`http://127.0.0.1:${keyholePort}/portal/signed-out`],
    backchannel_logout_uri: `http://127.0.0.1:${keyholePort}/portal/oidc/backchannel-logout`,
    backchannel_logout_session_required: true,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys },
  pkce: { methods: ['S256'], required: () => true },
  // The groups ride on the `profile` scope, which Keyhole asks for by default.
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'groups', 'harmony_customer_id'],
  },
  // Put the scopes' claims in the ID token itself (the default keeps them for userinfo).
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true }, backchannelLogout: { enabled: true } },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  async findAccount(_ctx, id) {
    const claims = accounts[id] ?? { email: `${id}@elsewhere.example`, email_verified: false, groups: [] };
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
