"""A partner's client, generated from Keyhole's OpenAPI document (see the README's "Partner
integration"): lists the claims the customer shared, then reads each one, and tells a refusal
(a `Problem`) from data.

    openapi-python-client generate --path openapi/openapi.json --meta none \
        --output-path examples/python/keyhole_client
    python examples/python/poll_claims.py http://127.0.0.1:8080 "$ACCESS_TOKEN"
"""

import sys

from keyhole_client import AuthenticatedClient
from keyhole_client.api.partner import get_record, list_records
from keyhole_client.models import Problem, Record, RecordPage


def main(base_url: str, access_token: str) -> int:
    client = AuthenticatedClient(base_url=base_url, token=access_token)
    listed = list_records.sync_detailed("claims", client=client)
    if isinstance(listed.parsed, Problem):
        print(f"refused: {listed.status_code} {listed.parsed.type_}: {listed.parsed.detail}")
        return 1
    assert isinstance(listed.parsed, RecordPage)
    for item in listed.parsed.items:
        one = get_record.sync_detailed("claims", item.id, client=client)
        if isinstance(one.parsed, Record):
            # Only the fields the customer granted come back, beside the id.
            fields = one.parsed.additional_properties
            print(f"{one.parsed.id}: {fields} (ETag {one.headers.get('etag')})")
        else:
            print(f"{item.id}: {one.status_code} {one.parsed}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
