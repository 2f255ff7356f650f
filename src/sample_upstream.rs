//! A built-in sample of the insurer's claims API, for `keyhole demo` and the load benchmark.
//! Its records carry the sensitive fields a real one would (IMEI, IBAN, payout, date of birth)
//! precisely so that the demo shows them *not* reaching the partner.

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, get, web};
use serde_json::{Value, json};
use std::net::TcpListener;

struct Seed<'a> {
    id: &'a str,
    customer: &'a str,
    status: &'a str,
    updated: &'a str,
    model: &'a str,
    imei: &'a str,
    stage: &'a str,
    holder: (&'a str, &'a str),
    iban: &'a str,
    amount: f64,
}

fn claim(seed: Seed<'_>) -> Value {
    let Seed {
        id,
        customer,
        status,
        updated,
        model,
        imei,
        stage,
        holder,
        iban,
        amount,
    } = seed;
    json!({
        "id": id,
        "customer_id": customer,
        "claim_number": format!("HRM-2024-{}", &id[2..]),
        "policy_number": format!("POL-{}", &customer[3..]),
        "status": status,
        "status_updated_at": updated,
        "incident": {"type": "accidental_damage", "date": "2024-11-02", "description": "Dropped on a tiled floor; screen cracked."},
        "device": {"make": "Apple", "model": model, "imei": imei, "serial_number": format!("F2L{}XYZ", &id[2..])},
        "repair": {"stage": stage, "repairer": "FixPoint Repairs Ltd, Unit 4 Riverside Trading Estate, Leeds"},
        "settlement": {"amount": amount, "currency": "GBP", "iban": iban, "account_holder": holder.0},
        "policyholder": {"name": holder.0, "date_of_birth": holder.1, "email": format!("{}@example.com", holder.0.split(' ').next().unwrap_or("x").to_lowercase()), "phone": "+44 7700 900123"}
    })
}

/// The seeded records: two customers, two claims each.
pub fn claims() -> Vec<Value> {
    let alice = ("Alice Example", "1985-04-12");
    let bob = ("Bob Sample", "1979-09-30");
    vec![
        claim(Seed {
            id: "C-1001",
            customer: "CU-1001",
            status: "in_repair",
            updated: "2024-11-18T14:32:05Z",
            model: "iPhone 14 Pro",
            imei: "356938035643809",
            stage: "awaiting_parts",
            holder: alice,
            iban: "GB82WEST12345698765432",
            amount: 289.0,
        }),
        claim(Seed {
            id: "C-1002",
            customer: "CU-1001",
            status: "paid",
            updated: "2024-06-03T09:12:44Z",
            model: "iPad Air",
            imei: "356938035643817",
            stage: "completed",
            holder: alice,
            iban: "GB82WEST12345698765432",
            amount: 412.5,
        }),
        claim(Seed {
            id: "C-2001",
            customer: "CU-2002",
            status: "being_assessed",
            updated: "2024-11-20T08:01:00Z",
            model: "Galaxy S23",
            imei: "351756051523999",
            stage: "not_started",
            holder: bob,
            iban: "GB33BUKB20201555555555",
            amount: 0.0,
        }),
        claim(Seed {
            id: "C-2002",
            customer: "CU-2002",
            status: "rejected",
            updated: "2024-10-11T16:45:10Z",
            model: "Pixel 8",
            imei: "352099001761481",
            stage: "not_started",
            holder: bob,
            iban: "GB33BUKB20201555555555",
            amount: 0.0,
        }),
    ]
}

struct Data(Vec<Value>);

#[get("/claims/{id}")]
async fn item(data: web::Data<Data>, id: web::Path<String>) -> HttpResponse {
    match data.0.iter().find(|c| c["id"] == id.as_str()) {
        Some(claim) => HttpResponse::Ok().json(claim),
        None => HttpResponse::NotFound().json(json!({"error": "no such claim"})),
    }
}

#[get("/customers/{customer_id}/claims")]
async fn list(data: web::Data<Data>, customer: web::Path<String>) -> HttpResponse {
    let claims: Vec<&Value> = data
        .0
        .iter()
        .filter(|c| c["customer_id"] == customer.as_str())
        .collect();
    HttpResponse::Ok().json(claims)
}

/// Serves the sample records on `listener` until stopped.
pub fn start(listener: TcpListener, workers: usize) -> std::io::Result<Server> {
    let data = web::Data::new(Data(claims()));
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .service(item)
            .service(list)
    })
    .workers(workers)
    .listen(listener)?
    .run())
}
