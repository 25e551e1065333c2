//! The gateway's public readiness payload cannot carry node ids, addresses, tunnel details,
//! organisations or keys (the same walk as the node <-> control plane messages), and the
//! tunnel and ticket parsers refuse bad input with errors, never panics.

use b3iq_core::TrustTier;
use b3iq_protocol::gateway::{NetworkReadiness, RequestTicket, RouteReadiness, TierCount, TunnelHello};
use serde_json::{json, Value};

fn sample() -> NetworkReadiness {
    NetworkReadiness {
        models: vec![RouteReadiness {
            model: "smollm2-135m-instruct-q4_1".into(),
            nodes_ready: 3,
            tiers: vec![TierCount { tier: TrustTier::BestEffort, nodes: 3 }],
            capacity: 3,
            in_flight: 1,
            waiting: 0,
            window_s: 3600,
            samples: 42,
            median_ttft_ms: Some(35),
            median_tokens_per_s_milli: Some(61_000),
        }],
        generated_at_ms: 1_800_000_000_000,
    }
}

fn objects(v: &Value, path: String, out: &mut Vec<String>, strings: &mut Vec<(String, String)>) {
    match v {
        Value::Object(o) => {
            out.push(path.clone());
            for (k, x) in o {
                objects(x, format!("{path}/{k}"), out, strings);
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| objects(x, format!("{path}/{i}"), out, strings)),
        Value::String(s) => strings.push((path, s.clone())),
        _ => {}
    }
}

#[test]
fn readiness_cannot_carry_nodes_addresses_tunnels_orgs_or_keys() {
    let v = serde_json::to_value(sample()).unwrap();
    assert_eq!(serde_json::from_value::<NetworkReadiness>(v.clone()).unwrap(), sample());
    let text = v.to_string();
    for f in ["node", "node_id", "address", "url", "host", "ip", "tunnel", "org", "org_id", "key", "key_id", "gateway", "prompt", "output"] {
        assert!(!text.contains(&format!("\"{f}\":")), "a field named {f}");
    }
    let (mut objs, mut strings) = (Vec::new(), Vec::new());
    objects(&v, String::new(), &mut objs, &mut strings);
    // Adding any such field to any object is refused.
    for o in &objs {
        for f in ["node_id", "address", "tunnel", "org_id", "key_id"] {
            let mut bad = v.clone();
            let target = if o.is_empty() { bad.as_object_mut() } else { bad.pointer_mut(o).and_then(Value::as_object_mut) };
            target.unwrap().insert(f.into(), json!("b3n_x"));
            assert!(serde_json::from_value::<NetworkReadiness>(bad).is_err(), "{o} accepted {f}");
        }
    }
    // The one string, the model id, must be an identifier: no URL, address or free text.
    assert_eq!(strings.len(), 1);
    for bad in ["https://10.0.0.5:7420", "10.0.0.5 node", "", "a b"] {
        let mut x = v.clone();
        x["models"][0]["model"] = json!(bad);
        assert!(serde_json::from_value::<NetworkReadiness>(x).is_err(), "model {bad:?}");
    }
}

#[test]
fn tunnel_and_ticket_headers_refuse_garbage_without_panicking() {
    for junk in ["", "zz", "7b7d", &"ab".repeat(9000), "7b226e6f64655f6964223a317d"] {
        assert!(TunnelHello::from_header(junk).is_err(), "{junk:?}");
        assert!(RequestTicket::from_header(junk).is_err(), "{junk:?}");
    }
}
