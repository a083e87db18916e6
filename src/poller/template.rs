//! Expanding the small subset of Prometheus alert templates that rule annotations use.
//!
//! Supported actions, with optional `{{-`/`-}}` whitespace trimming:
//! `{{ $value }}`, `{{ .Value }}`, `{{ $labels.name }}`, `{{ .Labels.name }}`, each optionally
//! piped into `humanize`, `humanizePercentage` or `humanizeDuration`. Values print the way Go's
//! `%v` prints a float64 (`0.06`, `1e+06`, `NaN`, `+Inf`), the humanize functions as in
//! Prometheus (`%.4g` with SI prefixes), and a label the series does not have prints as an
//! empty string, as in Prometheus (whose `$labels` map yields "" for a missing key; plain Go
//! templates would print `<no value>`). Any other action (variables, `if`, `range`, other functions)
//! is left in the text unexpanded, braces included, so nothing is silently dropped.

use crate::core::alert::LabelSet;

/// Expands `text` for one alert: its series labels and sample value.
pub fn expand(text: &str, labels: &LabelSet, value: f64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(len) = rest[open + 2..].find("}}") else {
            break;
        };
        let mut inner = &rest[open + 2..open + 2 + len];
        let raw = &rest[open..open + 4 + len];
        out.push_str(&rest[..open]);
        rest = &rest[open + 4 + len..];
        if let Some(trimmed) = inner.strip_prefix("- ") {
            inner = trimmed;
            out.truncate(out.trim_end().len());
        }
        let trim_after = inner.ends_with(" -");
        if trim_after {
            inner = &inner[..inner.len() - 2];
        }
        match eval(inner.trim(), labels, value) {
            Some(s) => out.push_str(&s),
            None => out.push_str(raw),
        }
        if trim_after {
            rest = rest.trim_start();
        }
    }
    out.push_str(rest);
    out
}

/// Whether some `{{` has no closing `}}` (Prometheus rejects such a rule).
pub fn has_unterminated_action(text: &str) -> bool {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        match rest[open + 2..].find("}}") {
            Some(len) => rest = &rest[open + 4 + len..],
            None => return true,
        }
    }
    false
}

enum Val {
    Num(f64),
    Str(String),
}

fn eval(action: &str, labels: &LabelSet, value: f64) -> Option<String> {
    let mut stages = action.split('|').map(str::trim);
    let term = stages.next()?;
    let mut val = if term == "$value" || term == ".Value" {
        Val::Num(value)
    } else {
        let name = term
            .strip_prefix("$labels.")
            .or_else(|| term.strip_prefix(".Labels."))?;
        if !super::rules::is_valid_label_name(name) {
            return None;
        }
        Val::Str(labels.get(name).cloned().unwrap_or_default())
    };
    for func in stages {
        let v = match &val {
            Val::Num(v) => *v,
            Val::Str(s) => s.trim().parse::<f64>().ok()?,
        };
        val = Val::Str(match func {
            "humanize" => humanize(v),
            "humanizePercentage" => format!("{}%", go_g(v * 100.0, Some(4))),
            "humanizeDuration" => humanize_duration(v),
            _ => return None,
        });
    }
    Some(match val {
        Val::Num(v) => go_g(v, None),
        Val::Str(s) => s,
    })
}

/// Formats like Go's `%g`: shortest round-trip digits when `precision` is `None` (that is
/// `%v`), else `%.<precision>g`.
pub fn go_g(v: f64, precision: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let sign = if v.is_sign_negative() { "-" } else { "" };
    let sci = match precision {
        None => format!("{:e}", v.abs()),
        Some(p) => format!("{:.*e}", p.max(1) - 1, v.abs()),
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    if digits == [b'0'] {
        return format!("{sign}0");
    }
    let nd = digits.len() as i64;
    let dp = exp + 1;
    let (shortest, mut prec) = match precision {
        None => (true, nd),
        Some(p) => (false, p.max(1) as i64),
    };
    let mut eprec = prec;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    if shortest {
        eprec = 6;
    }
    let digit = |i: i64| -> char {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .map_or('0', |d| char::from(*d))
    };
    let mut out = String::from(sign);
    if exp < -4 || exp >= eprec {
        prec = prec.min(nd);
        out.push(digit(0));
        if prec > 1 {
            out.push('.');
            (1..prec).for_each(|i| out.push(digit(i)));
        }
        let esign = if exp < 0 { '-' } else { '+' };
        out.push_str(&format!("e{esign}{:02}", exp.abs()));
        return out;
    }
    if prec > dp {
        prec = nd;
    }
    if dp > 0 {
        (0..dp).for_each(|i| out.push(digit(i)));
    } else {
        out.push('0');
    }
    let frac = (prec - dp).max(0);
    if frac > 0 {
        out.push('.');
        (0..frac).for_each(|i| out.push(digit(dp + i)));
    }
    out
}

const BIG: [&str; 8] = ["k", "M", "G", "T", "P", "E", "Z", "Y"];
const SMALL: [&str; 8] = ["m", "u", "n", "p", "f", "a", "z", "y"];

/// Scales towards 1 with SI prefixes, as Prometheus's `humanize` does.
fn si(mut v: f64) -> (f64, &'static str) {
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in BIG {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in SMALL {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    (v, prefix)
}

/// Prometheus's `humanize`: `1.235k`, `12.5m`, `0`.
pub fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_g(v, Some(4));
    }
    let (v, prefix) = si(v);
    format!("{}{prefix}", go_g(v, Some(4)))
}

/// Prometheus's `humanizeDuration` of seconds: `1d 2h 3m 4s`, `2.425s`, `150ms`.
pub fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_g(v, Some(4));
    }
    if v == 0.0 {
        return format!("{}s", go_g(v, Some(4)));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        let total = v as i64; // truncation, as Go's int64(v)
        let (s, m, h, d) = (
            total % 60,
            total / 60 % 60,
            total / 3600 % 24,
            total / 86_400,
        );
        return match (d, h, m) {
            (0, 0, 0) => format!("{sign}{}s", go_g(v, Some(4))),
            (0, 0, _) => format!("{sign}{m}m {s}s"),
            (0, _, _) => format!("{sign}{h}h {m}m {s}s"),
            _ => format!("{sign}{d}d {h}h {m}m {s}s"),
        };
    }
    let (v, prefix) = si(v);
    format!("{}{prefix}s", go_g(v, Some(4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> LabelSet {
        [("app", "checkout"), ("namespace", "shop")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_labels_and_value_in_every_form() {
        let l = labels();
        assert_eq!(
            expand(
                "{{ $labels.app }}/{{$labels.namespace}} {{ .Labels.app }} = {{ $value }} {{.Value}}",
                &l,
                0.06
            ),
            "checkout/shop checkout = 0.06 0.06"
        );
        assert_eq!(expand("{{ $labels.pod }}", &l, 1.0), "");
        assert_eq!(
            expand(
                "{{ $labels.deployment }}{{ $labels.app }} in {{ .Labels.x }}",
                &l,
                1.0
            ),
            "checkout in "
        );
        assert_eq!(expand("a  {{- $value -}}  b", &l, 3.0), "a3b");
    }

    #[test]
    fn leaves_unsupported_actions_verbatim() {
        let l = labels();
        let text = "{{ if gt $value 1.0 }}big{{ end }} {{ $value | printf \"%.2f\" }} {{ oops";
        assert_eq!(
            expand(text, &l, 2.0),
            "{{ if gt $value 1.0 }}big{{ end }} {{ $value | printf \"%.2f\" }} {{ oops"
        );
        assert!(has_unterminated_action("{{ oops"));
        assert!(!has_unterminated_action("{{ $value }} }}"));
    }

    #[test]
    fn values_print_like_go() {
        for (v, s) in [
            (0.0, "0"),
            (1.0, "1"),
            (0.06, "0.06"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(go_g(v, None), s, "{v}");
        }
        assert_eq!(go_g(6.000000000000001, Some(4)), "6");
        assert_eq!(go_g(12.5, Some(4)), "12.5");
        assert_eq!(go_g(1234.56, Some(4)), "1235");
        assert_eq!(go_g(12345.0, Some(4)), "1.234e+04");
    }

    #[test]
    fn humanize_functions_match_prometheus() {
        let l = labels();
        assert_eq!(expand("{{ $value | humanizePercentage }}", &l, 0.06), "6%");
        assert_eq!(expand("{{ $value | humanize }}", &l, 1234.0), "1.234k");
        assert_eq!(humanize(0.0125), "12.5m");
        assert_eq!(humanize(0.0), "0");
        assert_eq!(humanize_duration(2.425), "2.425s");
        assert_eq!(humanize_duration(0.15), "150ms");
        assert_eq!(humanize_duration(0.0), "0s");
        assert_eq!(humanize_duration(3725.0), "1h 2m 5s");
        assert_eq!(humanize_duration(90061.0), "1d 1h 1m 1s");
        assert_eq!(humanize_duration(61.5), "1m 1s");
    }
}
