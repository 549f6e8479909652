//! `patchgap gate check`: the deploy gate's verdict for CI, as a table,
//! JSON or JUnit XML (one test case per image, failed when denied), and
//! an exit status: 0 allowed, 3 denied, 1 on error.

use patchgap_proto::v1;
use serde_json::{Value, json};

/// The gate denied the image: exit status 3. The verdict is printed
/// already; this is the one stderr line.
#[derive(Debug)]
pub struct GateDenied(pub String);

impl std::fmt::Display for GateDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GateDenied {}

fn reason_json(r: &v1::GateReason) -> Value {
    json!({
        "incident": r.incident,
        "action": r.action,
        "container": r.container,
        "image": r.image,
        "advisory": r.advisory,
        "package": r.package,
        "chain": r.chain,
        "via": r.via,
        "message": r.message,
    })
}

/// `-o json`: the verdict with stable field names.
pub fn json(image: &str, r: &v1::GateCheckResponse) -> Value {
    json!({
        "image": image,
        "allowed": r.allowed,
        "denied": r.denied.iter().map(reason_json).collect::<Vec<_>>(),
        "warnings": r.warnings.iter().map(reason_json).collect::<Vec<_>>(),
        "skipped": r.skipped,
    })
}

/// The table: the verdict, then one row per reason and its message.
pub fn table(image: &str, r: &v1::GateCheckResponse) -> String {
    let mut out = format!(
        "{image}: {}\n",
        if r.allowed { "allowed" } else { "DENIED" }
    );
    if !r.skipped.is_empty() {
        out.push_str(&format!("{}\n", r.skipped));
    }
    let rows: Vec<Vec<String>> = r
        .denied
        .iter()
        .map(|d| ("deny", d))
        .chain(r.warnings.iter().map(|w| ("warn", w)))
        .map(|(verdict, d)| {
            vec![
                verdict.to_string(),
                d.incident.clone(),
                d.action.clone(),
                d.advisory.clone(),
                d.package.clone(),
                match d.chain.is_empty() {
                    true => d.via.clone(),
                    false => d.chain.join(" -> "),
                },
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&crate::render::table(
            &[
                "VERDICT", "INCIDENT", "ACTION", "ADVISORY", "PACKAGE", "VIA",
            ],
            &rows,
            "",
        ));
        for d in r.denied.iter().chain(&r.warnings) {
            out.push_str(&format!("- {}\n", crate::render::clean(&d.message)));
        }
    }
    out
}

/// `-o junit`: one test suite, one test case for the image, a
/// `<failure>` when denied; warnings go to `<system-out>`. CI systems
/// (GitLab, Jenkins, GitHub's test reporters) read this shape.
pub fn junit(image: &str, r: &v1::GateCheckResponse) -> String {
    let failures = usize::from(!r.allowed);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"patchgap gate\" tests=\"1\" failures=\"{failures}\" errors=\"0\">\n"
    ));
    x.push_str(&format!(
        "  <testsuite name=\"patchgap gate\" tests=\"1\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">\n"
    ));
    x.push_str(&format!(
        "    <testcase classname=\"patchgap.gate\" name=\"{}\">\n",
        escape(image)
    ));
    if !r.allowed {
        let message = r
            .denied
            .iter()
            .map(|d| d.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        x.push_str(&format!(
            "      <failure type=\"denied\" message=\"{}\">{}</failure>\n",
            escape(&message),
            escape(
                &r.denied
                    .iter()
                    .map(|d| d.message.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        ));
    }
    let mut out: Vec<String> = r
        .warnings
        .iter()
        .map(|w| format!("warning: {}", w.message))
        .collect();
    if !r.skipped.is_empty() {
        out.push(r.skipped.clone());
    }
    if !out.is_empty() {
        x.push_str(&format!(
            "      <system-out>{}</system-out>\n",
            escape(&out.join("\n"))
        ));
    }
    x.push_str("    </testcase>\n  </testsuite>\n</testsuites>\n");
    x
}

/// Text as XML 1.0 character data or an attribute value: the five
/// entities escaped, characters XML 1.0 cannot carry at all (controls but
/// tab and newline, U+FFFE, U+FFFF) written as `\u{..}`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_markup_and_characters_xml_cannot_carry() {
        assert_eq!(
            escape("a<b>&\"c'\u{1b}[31m\u{0}\n"),
            "a&lt;b&gt;&amp;&quot;c&apos;\\u{1b}[31m\\u{0}\n"
        );
    }

    #[test]
    fn a_denial_is_one_failed_test_case() {
        let r = v1::GateCheckResponse {
            allowed: false,
            denied: vec![v1::GateReason {
                incident: "INC-1".into(),
                message: "carries <pkg> & more".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let x = junit("sha256:ab", &r);
        assert!(x.contains("failures=\"1\""), "{x}");
        assert!(
            x.contains("<failure type=\"denied\" message=\"carries &lt;pkg&gt; &amp; more\">"),
            "{x}"
        );
        let ok = junit(
            "sha256:ab",
            &v1::GateCheckResponse {
                allowed: true,
                ..Default::default()
            },
        );
        assert!(
            ok.contains("failures=\"0\"") && !ok.contains("<failure"),
            "{ok}"
        );
    }
}
