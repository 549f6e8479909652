//! CVSS base scores from vector strings, as OSV's `severity[].score`
//! carries them.
//!
//! CVSS v3.0 and v3.1 (FIRST's specifications, section 7 "CVSS v3.x
//! Equations") have the same base equations; they differ only in
//! environmental scoring and in how Roundup is written. v3.0 defines
//! Roundup as "the smallest number, specified to one decimal place, that is
//! equal to or higher than its input"; computed naively in floating point
//! that misrounds values such as 4.000000001 (really 4.0) up to 4.1, so v3.1
//! specifies an integer-based Roundup (Appendix A) that removes the noise.
//! The v3.1 function is used for both versions here: it is v3.0's exact
//! definition without the floating-point error, and over all 2,592 base
//! metric combinations it matches an exact decimal computation.
//!
//! A vector is `CVSS:3.x/` followed by `/`-separated `metric:value` pairs in
//! any order. All eight base metrics must be present; temporal and
//! environmental metrics are validated and otherwise ignored, since the
//! base score does not use them. Unknown or repeated metrics make the
//! vector invalid.
//!
//! CVSS v4.0 scores come from a table of 270 "macrovector" scores and an
//! interpolation step, not from closed formulas; they are not computed
//! here, so a v4.0 vector (kept as text in [`super::Severity`]) has no
//! score. [`is_v4_vector`] at least tells a well-formed one apart. CVSS v2
//! vectors are not scored either.

/// Longest vector accepted, in bytes (a complete v3.1 vector with every
/// environmental metric is about 150).
pub const MAX_VECTOR_LEN: usize = 256;

/// The CVSS v3.0/v3.1 base score of `vector` and its qualitative rating
/// (`NONE`, `LOW`, `MEDIUM`, `HIGH`, `CRITICAL`), or `None` when the
/// vector is not a valid v3.0 or v3.1 vector.
pub fn base_score(vector: &str) -> Option<(f64, &'static str)> {
    let m = parse_v3(vector)?;
    // Weights from the specification's table 16.
    let av = match m.av {
        b'N' => 0.85,
        b'A' => 0.62,
        b'L' => 0.55,
        _ => 0.2,
    };
    let ac = if m.ac == b'L' { 0.77 } else { 0.44 };
    let changed = m.s == b'C';
    let pr = match (m.pr, changed) {
        (b'N', _) => 0.85,
        (b'L', false) => 0.62,
        (b'L', true) => 0.68,
        (_, false) => 0.27,
        (_, true) => 0.5,
    };
    let ui = if m.ui == b'N' { 0.85 } else { 0.62 };
    let cia = |v: u8| match v {
        b'H' => 0.56,
        b'L' => 0.22,
        _ => 0.0,
    };
    let iss = 1.0 - (1.0 - cia(m.c)) * (1.0 - cia(m.i)) * (1.0 - cia(m.a));
    let impact = if changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02f64).powi(15)
    } else {
        6.42 * iss
    };
    let exploitability = 8.22 * av * ac * pr * ui;
    let score = if impact <= 0.0 {
        0.0
    } else if changed {
        roundup(f64::min(1.08 * (impact + exploitability), 10.0))
    } else {
        roundup(f64::min(impact + exploitability, 10.0))
    };
    Some((score, rating(score)))
}

/// The qualitative rating of a CVSS v3 (or v4) score: `NONE` (0.0), `LOW`
/// (0.1-3.9), `MEDIUM` (4.0-6.9), `HIGH` (7.0-8.9), `CRITICAL` (9.0-10.0).
pub fn rating(score: f64) -> &'static str {
    if score <= 0.0 {
        "NONE"
    } else if score < 4.0 {
        "LOW"
    } else if score < 7.0 {
        "MEDIUM"
    } else if score < 9.0 {
        "HIGH"
    } else {
        "CRITICAL"
    }
}

/// CVSS v3.1 Appendix A Roundup: the smallest one-decimal number not below
/// `x`, computed on integers so that floating-point noise (4.000000001) does
/// not round up.
fn roundup(x: f64) -> f64 {
    let int_input = (x * 100_000.0).round() as i64;
    if int_input % 10_000 == 0 {
        int_input as f64 / 100_000.0
    } else {
        (int_input / 10_000 + 1) as f64 / 10.0
    }
}

/// The base metric values of a vector (each one ASCII letter).
struct Base {
    av: u8,
    ac: u8,
    pr: u8,
    ui: u8,
    s: u8,
    c: u8,
    i: u8,
    a: u8,
}

/// Every v3 metric and its allowed values; the first eight are the base
/// metrics, in the order of [`Base`].
const V3_METRICS: &[(&str, &str)] = &[
    ("AV", "NALP"),
    ("AC", "LH"),
    ("PR", "NLH"),
    ("UI", "NR"),
    ("S", "UC"),
    ("C", "HLN"),
    ("I", "HLN"),
    ("A", "HLN"),
    ("E", "XUPFH"),
    ("RL", "XOTWU"),
    ("RC", "XURC"),
    ("CR", "XLMH"),
    ("IR", "XLMH"),
    ("AR", "XLMH"),
    ("MAV", "XNALP"),
    ("MAC", "XLH"),
    ("MPR", "XNLH"),
    ("MUI", "XNR"),
    ("MS", "XUC"),
    ("MC", "XNLH"),
    ("MI", "XNLH"),
    ("MA", "XNLH"),
];

fn parse_v3(vector: &str) -> Option<Base> {
    if vector.len() > MAX_VECTOR_LEN {
        return None;
    }
    let rest = vector
        .strip_prefix("CVSS:3.1/")
        .or_else(|| vector.strip_prefix("CVSS:3.0/"))?;
    let mut values = [0u8; V3_METRICS.len()];
    for part in rest.split('/') {
        let (name, value) = part.split_once(':')?;
        let idx = V3_METRICS.iter().position(|(n, _)| *n == name)?;
        let &[v] = value.as_bytes() else {
            return None;
        };
        if values[idx] != 0 || !V3_METRICS[idx].1.as_bytes().contains(&v) {
            return None;
        }
        values[idx] = v;
    }
    if values[..8].contains(&0) {
        return None;
    }
    Some(Base {
        av: values[0],
        ac: values[1],
        pr: values[2],
        ui: values[3],
        s: values[4],
        c: values[5],
        i: values[6],
        a: values[7],
    })
}

/// Every v4.0 metric and its allowed values; the first eleven are the base
/// metrics, which a vector must have.
const V4_METRICS: &[(&str, &str)] = &[
    ("AV", "NALP"),
    ("AC", "LH"),
    ("AT", "NP"),
    ("PR", "NLH"),
    ("UI", "NPA"),
    ("VC", "HLN"),
    ("VI", "HLN"),
    ("VA", "HLN"),
    ("SC", "HLN"),
    ("SI", "HLN"),
    ("SA", "HLN"),
    ("E", "XAPU"),
    ("CR", "XHML"),
    ("IR", "XHML"),
    ("AR", "XHML"),
    ("MAV", "XNALP"),
    ("MAC", "XLH"),
    ("MAT", "XNP"),
    ("MPR", "XNLH"),
    ("MUI", "XNPA"),
    ("MVC", "XHLN"),
    ("MVI", "XHLN"),
    ("MVA", "XHLN"),
    ("MSC", "XHLN"),
    ("MSI", "XSHLN"),
    ("MSA", "XSHLN"),
    ("S", "XNP"),
    ("AU", "XNY"),
    ("R", "XAUI"),
    ("V", "XDC"),
    ("RE", "XLMH"),
    ("U", ""),
];

/// Whether `vector` is a well-formed CVSS v4.0 vector: `CVSS:4.0/`, the
/// eleven base metrics, and optional threat, environmental and
/// supplemental metrics with valid values, none repeated. (No score is
/// computed; see the module docs.)
pub fn is_v4_vector(vector: &str) -> bool {
    if vector.len() > MAX_VECTOR_LEN {
        return false;
    }
    let Some(rest) = vector.strip_prefix("CVSS:4.0/") else {
        return false;
    };
    let mut seen = [false; V4_METRICS.len()];
    for part in rest.split('/') {
        let Some((name, value)) = part.split_once(':') else {
            return false;
        };
        let Some(idx) = V4_METRICS.iter().position(|(n, _)| *n == name) else {
            return false;
        };
        let ok = if name == "U" {
            matches!(value, "X" | "Clear" | "Green" | "Amber" | "Red")
        } else {
            value.len() == 1 && V4_METRICS[idx].1.contains(value)
        };
        if !ok || seen[idx] {
            return false;
        }
        seen[idx] = true;
    }
    seen[..11].iter().all(|&s| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specification_examples() {
        // The worked examples of FIRST's "CVSS v3.1: Examples" document
        // (the v3.0 examples document has the same vectors and scores).
        let cases = [
            // CVE-2013-1937, phpMyAdmin reflected XSS.
            ("AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1, "MEDIUM"),
            // CVE-2013-0375, MySQL stored SQL injection.
            ("AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N", 6.4, "MEDIUM"),
            // CVE-2014-3566, SSLv3 POODLE.
            ("AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N", 3.1, "LOW"),
            // CVE-2012-1516, VMware guest to host escape.
            ("AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9, "CRITICAL"),
            // CVE-2009-0783, Apache Tomcat XML parser.
            ("AV:L/AC:L/PR:H/UI:N/S:U/C:L/I:L/A:L", 4.2, "MEDIUM"),
            // CVE-2012-0384, Cisco IOS command injection.
            ("AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 8.8, "HIGH"),
            // CVE-2015-1098, iWork denial of service.
            ("AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 7.8, "HIGH"),
            // CVE-2014-0160, OpenSSL Heartbleed.
            ("AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5, "HIGH"),
            // CVE-2014-6271, GNU Bash "Shellshock".
            ("AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8, "CRITICAL"),
            // CVE-2008-1447, DNS Kaminsky bug.
            ("AV:N/AC:H/PR:N/UI:N/S:C/C:N/I:H/A:N", 6.8, "MEDIUM"),
            // CVE-2014-2005, Sophos login screen bypass.
            ("AV:P/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 6.8, "MEDIUM"),
            // CVE-2010-0467, Joomla directory traversal.
            ("AV:N/AC:L/PR:N/UI:N/S:C/C:L/I:N/A:N", 5.8, "MEDIUM"),
            // CVE-2012-1342, Cisco ASA ACL bypass.
            ("AV:N/AC:L/PR:N/UI:N/S:C/C:N/I:L/A:N", 5.8, "MEDIUM"),
            // CVE-2013-6014, Juniper proxy ARP denial of service.
            ("AV:A/AC:L/PR:N/UI:N/S:C/C:N/I:H/A:H", 9.3, "CRITICAL"),
            // CVE-2014-9253, DokuWiki reflected XSS.
            ("AV:N/AC:L/PR:L/UI:R/S:C/C:L/I:L/A:N", 5.4, "MEDIUM"),
            // CVE-2011-1265, Microsoft Windows Bluetooth remote code execution.
            ("AV:A/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 8.8, "HIGH"),
            // CVE-2014-2019, Apple iOS security control bypass.
            ("AV:P/AC:L/PR:N/UI:N/S:U/C:N/I:H/A:N", 4.6, "MEDIUM"),
            // CVE-2015-0970, SearchBlox cross-site request forgery.
            ("AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 8.8, "HIGH"),
            // CVE-2016-0128, Badlock.
            ("AV:N/AC:H/PR:N/UI:R/S:U/C:H/I:H/A:N", 6.8, "MEDIUM"),
            // CVE-2016-1645, Google Chrome PDFium.
            ("AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 8.8, "HIGH"),
        ];
        for (metrics, score, rating) in cases {
            for version in ["3.0", "3.1"] {
                let v = format!("CVSS:{version}/{metrics}");
                assert_eq!(base_score(&v), Some((score, rating)), "{v}");
            }
        }
    }

    #[test]
    fn scores_that_need_the_careful_roundup() {
        // Cross-checked against Red Hat's `cvss` library (exact decimal
        // arithmetic). Naive ceil(x * 10) / 10 gets the scope-changed ones
        // wrong by 0.1 on some platforms.
        let cases = [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0, "NONE"),
            ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.6, "LOW"),
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H",
                10.0,
                "CRITICAL",
            ),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8, "HIGH"),
            (
                "CVSS:3.1/AV:A/AC:H/PR:H/UI:N/S:U/C:H/I:N/A:N",
                4.2,
                "MEDIUM",
            ),
            (
                "CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:L/A:N",
                4.8,
                "MEDIUM",
            ),
            (
                "CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:N/I:N/A:H",
                4.7,
                "MEDIUM",
            ),
            (
                "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:N/A:N",
                5.0,
                "MEDIUM",
            ),
            (
                "CVSS:3.1/AV:L/AC:L/PR:H/UI:R/S:C/C:L/I:L/A:L",
                5.2,
                "MEDIUM",
            ),
        ];
        for (v, score, rating) in cases {
            assert_eq!(base_score(v), Some((score, rating)), "{v}");
        }
        assert_eq!(roundup(4.000_000_001), 4.0);
        assert_eq!(roundup(4.02), 4.1);
        assert_eq!(roundup(4.0), 4.0);
    }

    #[test]
    fn metric_order_and_extra_metrics() {
        let base = base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H");
        // Any order, and temporal/environmental metrics are ignored.
        assert_eq!(
            base_score("CVSS:3.1/A:H/I:H/C:H/S:U/UI:N/PR:N/AC:L/AV:N"),
            base
        );
        assert_eq!(
            base_score(
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:P/RL:O/RC:C/CR:H/MAV:L/MS:X"
            ),
            base
        );
    }

    #[test]
    fn invalid_vectors() {
        for v in [
            "",
            "CVSS:3.1/",
            "CVSS:3.1",
            "CVSS:2.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "AV:N/AC:L/Au:N/C:P/I:P/A:P",
            // A base metric missing, repeated, unknown, or with a bad value.
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
            "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/XX:Y",
            "CVSS:3.1/AV:Q/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:NN/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:Z",
            "cvss:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/av:n/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        ] {
            assert_eq!(base_score(v), None, "{v:?}");
        }
        let long = format!(
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H{}",
            "/E:X".repeat(100)
        );
        assert_eq!(base_score(&long), None);
    }

    #[test]
    fn v4_vectors_are_recognised_but_not_scored() {
        let v = "CVSS:4.0/AV:N/AC:H/AT:N/PR:L/UI:A/VC:N/VI:N/VA:H/SC:N/SI:N/SA:H";
        assert!(is_v4_vector(v));
        assert_eq!(base_score(v), None);
        assert!(is_v4_vector(&format!("{v}/E:A/MSI:S/U:Amber/R:X")));
        assert!(!is_v4_vector(&format!("{v}/E:A/E:A")));
        assert!(!is_v4_vector(&format!("{v}/U:Blue")));
        assert!(!is_v4_vector(
            "CVSS:4.0/AV:N/AC:H/AT:N/PR:L/UI:A/VC:N/VI:N/VA:H/SC:N/SI:N"
        ));
        assert!(!is_v4_vector(
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
        ));
    }

    #[test]
    fn ratings() {
        assert_eq!(rating(0.0), "NONE");
        assert_eq!(rating(0.1), "LOW");
        assert_eq!(rating(3.9), "LOW");
        assert_eq!(rating(4.0), "MEDIUM");
        assert_eq!(rating(6.9), "MEDIUM");
        assert_eq!(rating(7.0), "HIGH");
        assert_eq!(rating(8.9), "HIGH");
        assert_eq!(rating(9.0), "CRITICAL");
        assert_eq!(rating(10.0), "CRITICAL");
    }
}
