//! `patchgap alerts` and `patchgap egress baseline`: the collector's
//! unexpected-egress alerts and learned baselines.

use anyhow::Context;
use patchgap_proto::v1;
use serde_json::{Value, json};

use crate::{
    ReadOpts, connect, print,
    render::{clean, rfc3339, table},
    status_error,
};

#[derive(clap::Subcommand)]
pub enum EgressCommand {
    /// One workload's learned baseline: state, generation, and each
    /// destination with its port, first sight, count and replicas.
    ///
    /// Examples:
    ///   patchgap egress baseline ml/Deployment/trainer
    ///   patchgap egress baseline ml/Deployment/trainer --export-policy > trainer.toml
    Baseline {
        /// The workload's baseline key, or part of it that names one.
        workload: String,
        /// Print the baseline as a policy-file allow-list (`[[egress]]`)
        /// to review and commit, each entry with its provenance.
        #[arg(long)]
        export_policy: bool,
    },
}

/// An alert as `-o json` lists it: the collector's document with the
/// store's identity and counters laid over it, times as RFC 3339 (as
/// every command's JSON writes them).
pub fn alert_json(a: &v1::EgressAlert) -> Value {
    let mut doc: Value = serde_json::from_str(&a.document).unwrap_or_else(|_| json!({}));
    if let Some(o) = doc.as_object_mut() {
        o.remove("first_seen_ms");
        o.remove("last_seen_ms");
        o.insert("id".into(), json!(a.id));
        o.insert("first_seen".into(), json!(rfc3339(a.first_seen_ms)));
        o.insert("last_seen".into(), json!(rfc3339(a.last_seen_ms)));
        o.insert("count".into(), json!(a.count));
        o.insert(
            "resolved".into(),
            if a.resolved_ms == 0 {
                Value::Null
            } else {
                json!(rfc3339(a.resolved_ms))
            },
        );
        for c in o
            .get_mut("packages_changed")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(ms) = c["at"].as_i64() {
                c["at"] = json!(rfc3339(ms));
            }
        }
        for l in o
            .get_mut("lineage")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(l) = l.as_object_mut()
                && let Some(ms) = l.remove("start_time_ms").and_then(|v| v.as_i64())
            {
                l.insert("start_time".into(), json!(rfc3339(ms)));
            }
        }
    }
    doc
}

fn destination(d: &Value) -> String {
    let names: Vec<&str> = d["names"]
        .as_array()
        .map(|n| n.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let addr = format!(
        "{}:{}",
        d["ip"].as_str().unwrap_or(""),
        d["port"].as_u64().unwrap_or(0)
    );
    if names.is_empty() {
        addr
    } else {
        format!("{} ({addr})", names.join(","))
    }
}

/// The alerts as a table; every cell goes through `render::table`'s
/// cleaning (names come from DNS answers, which anyone can write).
pub fn alerts_table(alerts: &[Value]) -> String {
    if alerts.is_empty() {
        return "(no egress alerts)\n".into();
    }
    let rows: Vec<Vec<String>> = alerts
        .iter()
        .map(|a| {
            let changed: Vec<String> = a["packages_changed"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .map(|p| {
                            format!(
                                "{} {}→{}",
                                p["name"].as_str().unwrap_or(""),
                                p["from"].as_str().unwrap_or(""),
                                p["to"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let reason = match a["mode"].as_str() {
                Some("audit") => {
                    format!("{} (audit: not sent)", a["reason"].as_str().unwrap_or(""))
                }
                _ => a["reason"].as_str().unwrap_or("").to_string(),
            };
            vec![
                a["id"].to_string(),
                a["last_seen"].as_str().unwrap_or("").to_string(),
                reason,
                a["workload"]["key"].as_str().unwrap_or("").to_string(),
                destination(&a["destination"]),
                a["count"].to_string(),
                if changed.is_empty() {
                    "-".to_string()
                } else {
                    changed.join(", ")
                },
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "LAST SEEN",
            "REASON",
            "WORKLOAD",
            "DESTINATION",
            "COUNT",
            "CHANGED",
        ],
        &rows,
        "",
    )
}

/// `patchgap alerts`.
pub async fn alerts(since: Option<i64>, limit: u32, read: ReadOpts) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let resp = client
        .list_egress_alerts(v1::ListEgressAlertsRequest {
            since_ms: since.unwrap_or(0),
            limit,
        })
        .await
        .map_err(|s| status_error(&read, s))?
        .into_inner();
    let alerts: Vec<Value> = resp.alerts.iter().map(alert_json).collect();
    print(read.output, json!({ "alerts": alerts }), || {
        alerts_table(&alerts)
    })
}

/// `patchgap changes -o json`: the collector's answer with times as RFC
/// 3339 and `from`/`to` as alerts' `packages_changed` spell them.
pub fn changes_json(pages: &[v1::ListWorkloadChangesResponse], since_ms: i64) -> Value {
    let first = pages.first();
    let changes: Vec<Value> = pages
        .iter()
        .flat_map(|p| &p.changes)
        .map(|c| {
            json!({
                "name": c.name,
                "from": c.from_version,
                "to": c.to_version,
                "at": rfc3339(c.at_ms),
                "evidence": c.evidence,
                "purl": c.purl,
                "hosts": c.hosts,
                "replicas": c.replicas,
            })
        })
        .collect();
    json!({
        "workload": first.map_or("", |p| p.key.as_str()),
        "since": rfc3339(since_ms),
        "instances": first.map_or(0, |p| p.instances),
        "truncated": pages.iter().any(|p| p.truncated),
        "history_dropped_before": first
            .filter(|p| p.history_dropped_before_ms > 0)
            .map(|p| rfc3339(p.history_dropped_before_ms)),
        "changes": changes,
    })
}

/// The changes as a table (cells cleaned by `render::table`).
pub fn changes_table(doc: &Value) -> String {
    let empty = Vec::new();
    let list = doc["changes"].as_array().unwrap_or(&empty);
    let head = format!(
        "{}: {} instance(s) since {}{}\n",
        doc["workload"].as_str().unwrap_or(""),
        doc["instances"],
        doc["since"].as_str().unwrap_or(""),
        if doc["truncated"] == true {
            " (truncated: a bound was reached, changes may be missing)"
        } else {
            ""
        }
    );
    let head = match doc["history_dropped_before"].as_str() {
        Some(at) => format!(
            "{head}note: history before {at} was dropped by retention: changes before it are not in this answer\n"
        ),
        None => head,
    };
    if list.is_empty() {
        return format!("{}(no package changes)\n", clean(&head));
    }
    let or = |v: &Value, none: &str| match v.as_str() {
        Some("") | None => none.to_string(),
        Some(s) => s.to_string(),
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                or(&c["at"], ""),
                or(&c["name"], ""),
                or(&c["from"], "(new)"),
                or(&c["to"], "(removed)"),
                or(&c["evidence"], ""),
                c["replicas"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
            ]
        })
        .collect();
    format!(
        "{}{}",
        clean(&head),
        table(
            &["AT", "PACKAGE", "FROM", "TO", "EVIDENCE", "REPLICAS"],
            &rows,
            ""
        )
    )
}

/// `patchgap changes`: every page, then one answer.
pub async fn changes(workload: String, since: i64, read: ReadOpts) -> anyhow::Result<()> {
    let mut client = connect(&read).await?;
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_workload_changes(v1::ListWorkloadChangesRequest {
                workload: workload.clone(),
                since_ms: since,
                page_size: 1_000,
                page_token: token.clone(),
            })
            .await
            .map_err(|s| status_error(&read, s))?
            .into_inner();
        token = page.next_page_token.clone();
        pages.push(page);
        // Bounded: the collector caps what one workload can hold.
        if token.is_empty() || pages.len() >= 1_000 {
            break;
        }
    }
    let doc = changes_json(&pages, since);
    print(read.output, doc.clone(), || changes_table(&doc))
}

/// `patchgap egress ...`.
pub async fn egress(command: EgressCommand, read: ReadOpts) -> anyhow::Result<()> {
    let EgressCommand::Baseline {
        workload,
        export_policy,
    } = command;
    let mut client = connect(&read).await?;
    let resp = client
        .get_egress_baseline(v1::GetEgressBaselineRequest {
            workload,
            export_policy,
        })
        .await
        .map_err(|s| status_error(&read, s))?
        .into_inner();
    if export_policy {
        print!("{}", resp.policy);
        return Ok(());
    }
    let doc: Value = serde_json::from_str(&resp.document).context("the baseline does not read")?;
    let json = json!({
        "key": resp.key,
        "version": resp.version,
        "updated_ms": resp.updated_ms,
        "state": resp.state,
        "baseline": doc,
    });
    print(read.output, json.clone(), || {
        let head = format!(
            "baseline {}  version {}  state {}  generation {}\n",
            clean(&resp.key),
            resp.version,
            clean(&resp.state),
            clean(doc["generation"].as_str().unwrap_or(""))
        );
        let rows: Vec<Vec<String>> = doc["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let dest = &e["destination"];
                let dest = dest["name"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| dest["address"].as_str().map(str::to_string))
                    .unwrap_or_else(|| dest.to_string());
                vec![
                    dest,
                    e["port"].to_string(),
                    e["protocol"].as_str().unwrap_or("").to_string(),
                    rfc3339(e["first_seen_ms"].as_i64().unwrap_or(0)),
                    e["count"].to_string(),
                    e["replicas"].as_array().map_or(0, Vec::len).to_string(),
                    if e["promoted"] == json!(true) {
                        "yes"
                    } else {
                        "no"
                    }
                    .to_string(),
                    e["exe"].as_str().unwrap_or("").to_string(),
                ]
            })
            .collect();
        head + &table(
            &[
                "DESTINATION",
                "PORT",
                "PROTO",
                "FIRST SEEN",
                "COUNT",
                "REPLICAS",
                "PROMOTED",
                "EXE",
            ],
            &rows,
            "",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_json_lays_the_counters_over_the_document() {
        let a = v1::EgressAlert {
            id: 7,
            dedup_key: "k|x|443|tcp".into(),
            workload: "k".into(),
            first_seen_ms: 1,
            last_seen_ms: 2,
            count: 3,
            resolved_ms: 0,
            document: r#"{"id":0,"destination":{"ip":"203.0.113.66","port":443,"names":["t.example.net"]},"workload":{"key":"k"},"packages_changed":[{"name":"trainlib","from":"1.0.0","to":"2.0.0","at":5}],"reason":"new_since_upgrade","mode":"policy+learn"}"#.into(),
        };
        let j = alert_json(&a);
        assert_eq!((j["id"].as_i64(), j["count"].as_u64()), (Some(7), Some(3)));
        assert!(j["resolved"].is_null());
        assert_eq!(j["last_seen"], "1970-01-01T00:00:00.002Z");
        assert_eq!(j["packages_changed"][0]["at"], "1970-01-01T00:00:00.005Z");
        let t = alerts_table(std::slice::from_ref(&j));
        assert!(t.contains("t.example.net (203.0.113.66:443)"), "{t}");
        assert!(t.contains("trainlib 1.0.0→2.0.0"), "{t}");
        // A name from a DNS answer cannot drive the terminal.
        let mut evil = j;
        evil["destination"]["names"] = json!(["x\u{1b}[2Jy.example.net"]);
        assert!(!alerts_table(&[evil]).contains('\u{1b}'));
    }

    /// A window that retention cut says so in the table, from when the
    /// answer is whole; a whole window says nothing of retention.
    #[test]
    fn changes_table_says_when_retention_cut_the_window() {
        let mut page = v1::ListWorkloadChangesResponse {
            key: "k8s:ml/Deployment/trainer".into(),
            instances: 1,
            ..Default::default()
        };
        let whole = changes_table(&changes_json(std::slice::from_ref(&page), 0));
        assert!(!whole.contains("retention"), "{whole}");
        page.history_dropped_before_ms = 86_400_000;
        let doc = changes_json(&[page], 0);
        assert_eq!(doc["history_dropped_before"], "1970-01-02T00:00:00.000Z");
        let cut = changes_table(&doc);
        assert!(
            cut.contains("history before 1970-01-02T00:00:00.000Z was dropped by retention"),
            "{cut}"
        );
    }
}
