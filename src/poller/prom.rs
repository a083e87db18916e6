//! A client for Prometheus's instant query API (`GET /api/v1/query`).
//!
//! Data model: a [`PromClient`] holds the base URL, the credentials ([`PromAuth`]) and the query
//! timeout; [`PromClient::query`] evaluates one expression at one time and returns a
//! [`QueryResult`]: the samples of an instant vector (a scalar becomes one sample with no
//! labels, as Prometheus's rule engine treats it) and the API's warnings. Sample values keep
//! `NaN` and `±Inf`. Everything else -- transport errors, timeouts, API errors (400 `bad_data`,
//! 422 `execution`, 503 `timeout`), bodies that do not decode, other result types -- is a
//! [`PromError`], which the poller reports as inconclusive and never as a reason to fire.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;

use crate::core::alert::LabelSet;

/// Largest response body accepted; an alert expression returning more is a mistake.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Extra time the HTTP request gets beyond the query timeout, so that Prometheus's own
/// `timeout` answer (503) normally arrives before the client gives up.
const REQUEST_GRACE: Duration = Duration::from_secs(2);

/// How to authenticate to Prometheus. `Debug` never shows the secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum PromAuth {
    #[default]
    None,
    Bearer(String),
    Basic {
        user: String,
        password: String,
    },
}

impl fmt::Debug for PromAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromAuth::None => f.write_str("None"),
            PromAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            PromAuth::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// One sample of the result.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series labels (`__name__` included when the expression keeps it).
    pub metric: LabelSet,
    pub value: f64,
}

/// A successful answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryResult {
    pub samples: Vec<Sample>,
    pub warnings: Vec<String>,
}

/// Why a query gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("Prometheus URL {0:?} must start with http:// or https://")]
    InvalidUrl(String),
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("query timed out (client side, after {0:?})")]
    Timeout(Duration, #[source] reqwest::Error),
    #[error("cannot reach Prometheus")]
    Transport(#[source] reqwest::Error),
    #[error("Prometheus answered HTTP {status}, {error_type}: {error}")]
    Api {
        status: u16,
        error_type: String,
        error: String,
    },
    #[error("Prometheus answered HTTP {status}: {snippet}")]
    Http { status: u16, snippet: String },
    #[error("answer larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("cannot decode the answer")]
    Decode(#[source] serde_json::Error),
    #[error("result type {0:?} is neither vector nor scalar")]
    ResultType(String),
    #[error("bad sample value {0:?}")]
    BadValue(String),
    #[error("a sample has no float value (native histogram?)")]
    NoFloatValue,
}

/// The Prometheus HTTP API client.
#[derive(Clone)]
pub struct PromClient {
    http: reqwest::Client,
    base: String,
    auth: PromAuth,
    query_timeout: Duration,
}

impl fmt::Debug for PromClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromClient")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .field("query_timeout", &self.query_timeout)
            .finish_non_exhaustive()
    }
}

impl PromClient {
    /// `url` is Prometheus's base URL (`http://prometheus:9090`, or with a path prefix).
    pub fn new(url: &str, auth: PromAuth, query_timeout: Duration) -> Result<Self, PromError> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(PromError::InvalidUrl(url.to_string()));
        }
        ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(query_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(PromError::Client)?;
        Ok(PromClient {
            http,
            base,
            auth,
            query_timeout,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Evaluates `expr` at `at` (`GET /api/v1/query?query=…&time=…&timeout=…`).
    pub async fn query(&self, expr: &str, at: Timestamp) -> Result<QueryResult, PromError> {
        let time = unix_text(at);
        let (status, body) = self
            .get("/api/v1/query", &[("query", expr), ("time", &time)])
            .await?;
        parse_response(status, &body)
    }

    /// Evaluates `expr` from `start` to `end` every `step`
    /// (`GET /api/v1/query_range`): one series per label set, values in time order.
    pub async fn query_range(
        &self,
        expr: &str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<Vec<RangeSeries>, PromError> {
        let (start, end) = (unix_text(start), unix_text(end));
        let step = format!("{:.3}", step.as_secs_f64().max(0.001));
        let (status, body) = self
            .get(
                "/api/v1/query_range",
                &[
                    ("query", expr),
                    ("start", &start),
                    ("end", &end),
                    ("step", &step),
                ],
            )
            .await?;
        parse_range_response(status, &body)
    }

    /// One GET of the API with the credentials and the timeouts: status and whole body.
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<(u16, Vec<u8>), PromError> {
        let timeout = format!("{:.3}", self.query_timeout.as_secs_f64());
        let client_timeout = self.query_timeout + REQUEST_GRACE;
        let mut req = self
            .http
            .get(format!("{}{path}", self.base))
            .query(params)
            .query(&[("timeout", &timeout)])
            .timeout(client_timeout);
        req = match &self.auth {
            PromAuth::None => req,
            PromAuth::Bearer(token) => req.bearer_auth(token),
            PromAuth::Basic { user, password } => req.basic_auth(user, Some(password)),
        };
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                PromError::Timeout(client_timeout, e)
            } else {
                PromError::Transport(e)
            }
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(PromError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

/// A time as the API takes it: unix seconds with milliseconds.
fn unix_text(at: Timestamp) -> String {
    format!("{:.3}", at.as_millisecond() as f64 / 1000.0)
}

/// One series of a range query.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeSeries {
    pub metric: LabelSet,
    /// (unix seconds, value); values keep `NaN` and `±Inf`.
    pub values: Vec<(f64, f64)>,
}

#[derive(Deserialize)]
struct RawRangeSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// Interprets a `query_range` answer: a matrix.
pub fn parse_range_response(status: u16, body: &[u8]) -> Result<Vec<RangeSeries>, PromError> {
    let (_, data) = successful(status, body)?;
    if data.result_type != "matrix" {
        return Err(PromError::ResultType(data.result_type));
    }
    let raw: Vec<RawRangeSeries> =
        serde_json::from_value(data.result).map_err(PromError::Decode)?;
    raw.into_iter()
        .map(|s| {
            let values = s
                .values
                .into_iter()
                .map(|(t, v)| Ok((t, parse_value(&v)?)))
                .collect::<Result<Vec<_>, PromError>>()?;
            Ok(RangeSeries {
                metric: s.metric,
                values,
            })
        })
        .collect()
}

/// Installs rustls's ring provider as the process default when none is installed yet: the crate
/// builds reqwest without a built-in provider, and building a client without one panics.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: some provider is then installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
}

/// The envelope of a successful answer and its data; anything else as the error it is: the
/// API's own (`errorType`, `error`), or the HTTP status with a snippet of the body.
fn successful(status: u16, body: &[u8]) -> Result<(Envelope, Data), PromError> {
    let mut envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) if (200..300).contains(&status) => return Err(PromError::Decode(e)),
        Err(_) => {
            return Err(PromError::Http {
                status,
                snippet: snippet(body),
            });
        }
    };
    if envelope.status != "success" || !(200..300).contains(&status) {
        return Err(match (envelope.error_type, envelope.error) {
            (Some(error_type), Some(error)) => PromError::Api {
                status,
                error_type,
                error,
            },
            _ => PromError::Http {
                status,
                snippet: snippet(body),
            },
        });
    }
    let data = envelope
        .data
        .take()
        .ok_or_else(|| PromError::ResultType("(no data)".into()))?;
    Ok((envelope, data))
}

/// Interprets an API answer: HTTP status and body.
pub fn parse_response(status: u16, body: &[u8]) -> Result<QueryResult, PromError> {
    let (envelope, data) = successful(status, body)?;
    let samples = match data.result_type.as_str() {
        "vector" => {
            let raw: Vec<RawSample> =
                serde_json::from_value(data.result).map_err(PromError::Decode)?;
            raw.into_iter()
                .map(|s| {
                    let (_, text) = s.value.ok_or(PromError::NoFloatValue)?;
                    Ok(Sample {
                        metric: s.metric,
                        value: parse_value(&text)?,
                    })
                })
                .collect::<Result<Vec<_>, PromError>>()?
        }
        "scalar" => {
            let (_, text): (f64, String) =
                serde_json::from_value(data.result).map_err(PromError::Decode)?;
            vec![Sample {
                metric: LabelSet::new(),
                value: parse_value(&text)?,
            }]
        }
        other => return Err(PromError::ResultType(other.to_string())),
    };
    Ok(QueryResult {
        samples,
        warnings: envelope.warnings,
    })
}

/// A sample value as Prometheus writes it: a decimal, `NaN`, `+Inf` or `-Inf`.
pub fn parse_value(text: &str) -> Result<f64, PromError> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => {
            let ok = !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
            text.parse::<f64>()
                .ok()
                .filter(|_| ok)
                .ok_or_else(|| PromError::BadValue(text.to_string()))
        }
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_vector_with_special_values() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"app":"checkout","namespace":"shop"},"value":[1700000000.123,"0.06"]},
            {"metric":{"app":"cart"},"value":[1700000000.123,"NaN"]},
            {"metric":{"app":"a"},"value":[1700000000.123,"+Inf"]},
            {"metric":{"app":"b"},"value":[1700000000.123,"-Inf"]},
            {"metric":{},"value":[1700000000.123,"1e+06"]}]},
            "warnings":["careful"]}"#;
        let r = parse_response(200, body).expect("valid answer");
        assert_eq!(r.samples.len(), 5);
        assert_eq!(r.samples[0].metric["app"], "checkout");
        assert_eq!(r.samples[0].value, 0.06);
        assert!(r.samples[1].value.is_nan());
        assert_eq!(r.samples[2].value, f64::INFINITY);
        assert_eq!(r.samples[3].value, f64::NEG_INFINITY);
        assert_eq!(r.samples[4].value, 1e6);
        assert_eq!(r.warnings, ["careful"]);
    }

    #[test]
    fn a_scalar_is_one_sample_without_labels() {
        let body =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"2"]}}"#;
        let r = parse_response(200, body).expect("valid answer");
        assert_eq!(
            r.samples,
            [Sample {
                metric: LabelSet::new(),
                value: 2.0
            }]
        );
    }

    #[test]
    fn api_errors_keep_type_and_message() {
        for (status, kind) in [(400, "bad_data"), (422, "execution"), (503, "timeout")] {
            let body = format!(r#"{{"status":"error","errorType":"{kind}","error":"boom"}}"#);
            match parse_response(status, body.as_bytes()) {
                Err(PromError::Api {
                    status: s,
                    error_type,
                    error,
                }) => {
                    assert_eq!(
                        (s, error_type.as_str(), error.as_str()),
                        (status, kind, "boom")
                    );
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn everything_else_is_an_error() {
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(
            matches!(parse_response(200, matrix), Err(PromError::ResultType(t)) if t == "matrix")
        );
        let hist = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{}]}]}}"#;
        assert!(matches!(
            parse_response(200, hist),
            Err(PromError::NoFloatValue)
        ));
        let bad_value = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x1"]}]}}"#;
        assert!(matches!(
            parse_response(200, bad_value),
            Err(PromError::BadValue(_))
        ));
        assert!(matches!(
            parse_response(200, b"not json"),
            Err(PromError::Decode(_))
        ));
        assert!(matches!(
            parse_response(502, b"<html>bad gateway</html>"),
            Err(PromError::Http { status: 502, .. })
        ));
    }

    #[test]
    fn auth_debug_is_redacted() {
        let basic = PromAuth::Basic {
            user: "u".into(),
            password: "pw-123".into(),
        };
        assert!(!format!("{basic:?}").contains("pw-123"));
        assert!(
            PromClient::new("prometheus:9090", PromAuth::None, Duration::from_secs(1)).is_err()
        );
    }
}
