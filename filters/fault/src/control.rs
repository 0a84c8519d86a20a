//! Faults requested by request headers, compatible with Envoy's fault filter
//! (`x-envoy-fault-abort-request`, `x-envoy-fault-abort-grpc-request`,
//! `x-envoy-fault-abort-request-percentage`, `x-envoy-fault-delay-request`,
//! `x-envoy-fault-delay-request-percentage`), off unless `header_control` is configured.
//!
//! Envoy documents its header control as unsafe with untrusted clients: anyone who can set a
//! header can slow or break the service. Here it requires, by default, a signature:
//!
//! ```text
//! x-meshwright-fault-signature: t=<unix seconds, expiry>,v1=<hex HMAC-SHA256>
//! ```
//! over the message `meshwright-fault-v1\n<t>\n<abort>\n<abort-grpc>\n<abort-pct>\n<delay>\n<delay-pct>`
//! where each field is the raw value of the corresponding `x-envoy-fault-*` header (empty when
//! absent), under the key held in the environment variable `signing_key_env`. A signature is
//! refused once `t` has passed, and when `t` lies further ahead than `max_signature_ttl_s`.
//!
//! Percentages are percent (0–100, decimals allowed); absent means 100. Envoy's throughput
//! header (`x-envoy-fault-throughput-response`) is not supported.

use crate::config::HeaderControl;
use meshwright_shared::crypto::{hmac_sha256, to_hex, verify_hmac_sha256_hex};
use meshwright_shared::headers::HeaderSource;
use meshwright_shared::percent::Percentage;

pub const ABORT: &str = "x-envoy-fault-abort-request";
pub const ABORT_GRPC: &str = "x-envoy-fault-abort-grpc-request";
pub const ABORT_PERCENTAGE: &str = "x-envoy-fault-abort-request-percentage";
pub const DELAY: &str = "x-envoy-fault-delay-request";
pub const DELAY_PERCENTAGE: &str = "x-envoy-fault-delay-request-percentage";
pub const SIGNATURE: &str = "x-meshwright-fault-signature";

/// Every header header control reads.
/// The headers that ask for a fault: a request without any of them is [`Control::Absent`].
pub const FIELDS: [&str; 5] = [ABORT, ABORT_GRPC, ABORT_PERCENTAGE, DELAY, DELAY_PERCENTAGE];

pub const HEADERS_READ: [&str; 6] = [
    ABORT,
    ABORT_GRPC,
    ABORT_PERCENTAGE,
    DELAY,
    DELAY_PERCENTAGE,
    SIGNATURE,
];

/// The fault a request asks for through headers, once accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlFault {
    pub http_status: Option<u16>,
    pub grpc_status: Option<u32>,
    pub abort_percentage: Percentage,
    pub delay_ms: Option<u64>,
    pub delay_percentage: Percentage,
}

/// Why fault headers were ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A header value is not a number in range.
    Malformed,
    BadSignature,
    Expired,
    /// `t` lies further in the future than `max_signature_ttl_s` allows.
    TooLongLived,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// No fault header on the request.
    Absent,
    Rejected(Rejection),
    Fault(ControlFault),
}

/// Reads and checks the fault headers of a request. `key` is the signing key when signatures
/// are required; then a request without a signature is [`Control::Absent`] whatever fault
/// headers it carries (they could not be accepted), so the signature alone gates the rest.
pub fn read(
    hc: &HeaderControl,
    key: Option<&[u8]>,
    req: &impl HeaderSource,
    now_ms: u64,
) -> Control {
    let signature = match key {
        Some(_) => match req.header(SIGNATURE) {
            Some(s) => Some(s),
            None => return Control::Absent,
        },
        None => None,
    };
    let value = |h| req.header(h);
    let fields = FIELDS.map(value);
    if fields.iter().all(Option::is_none) {
        return Control::Absent;
    }
    if let (Some(key), Some(sig)) = (key, signature)
        && let Err(r) = check_signature(hc, key, sig, &fields, now_ms)
    {
        return Control::Rejected(r);
    }
    match parse(hc, fields) {
        Some(f) => Control::Fault(f),
        None => Control::Rejected(Rejection::Malformed),
    }
}

fn parse(
    hc: &HeaderControl,
    [abort, grpc, abort_pct, delay, delay_pct]: [Option<&str>; 5],
) -> Option<ControlFault> {
    let pct = |v: Option<&str>| -> Option<Percentage> {
        match v {
            None => Some(Percentage::HUNDRED),
            Some(s) => {
                let p: f64 = s.trim().parse().ok()?;
                (0.0..=100.0)
                    .contains(&p)
                    .then(|| Percentage::from_ppm((p * 10_000.0).round() as u32))
                    .flatten()
            }
        }
    };
    let http_status = match abort {
        None => None,
        Some(s) => Some(
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|s| (200..=599).contains(s))?,
        ),
    };
    let grpc_status = match grpc {
        None => None,
        Some(s) => Some(
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|s| (1..=16).contains(s))?,
        ),
    };
    let delay_ms = match delay {
        None => None,
        Some(s) => Some(
            s.trim()
                .parse::<u64>()
                .ok()
                .filter(|d| *d <= hc.max_delay_ms)?,
        ),
    };
    Some(ControlFault {
        http_status,
        grpc_status,
        abort_percentage: pct(abort_pct)?,
        delay_ms,
        delay_percentage: pct(delay_pct)?,
    })
}

fn message(t: &str, fields: &[Option<&str>; 5]) -> String {
    let mut m = String::from("meshwright-fault-v1\n");
    m.push_str(t);
    for f in fields {
        m.push('\n');
        m.push_str(f.unwrap_or(""));
    }
    m
}

fn check_signature(
    hc: &HeaderControl,
    key: &[u8],
    sig: &str,
    fields: &[Option<&str>; 5],
    now_ms: u64,
) -> Result<(), Rejection> {
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (t, v1) = (
        t.ok_or(Rejection::BadSignature)?,
        v1.ok_or(Rejection::BadSignature)?,
    );
    let expiry_s: u64 = t.parse().map_err(|_| Rejection::BadSignature)?;
    if !verify_hmac_sha256_hex(key, message(t, fields).as_bytes(), v1) {
        return Err(Rejection::BadSignature);
    }
    let now_s = now_ms / 1000;
    if expiry_s <= now_s {
        return Err(Rejection::Expired);
    }
    if expiry_s - now_s > hc.max_signature_ttl_s {
        return Err(Rejection::TooLongLived);
    }
    Ok(())
}

/// The header values to send, in request order, for a signed fault request: used by tooling and
/// tests. `fields` are the values of the five `x-envoy-fault-*` headers (None: header not sent).
pub fn sign(key: &[u8], expiry_unix_s: u64, fields: [Option<&str>; 5]) -> String {
    let t = expiry_unix_s.to_string();
    let mac = hmac_sha256(key, message(&t, &fields).as_bytes());
    format!("t={t},v1={}", to_hex(&mac))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwright_shared::headers::HeaderList;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW_MS: u64 = 1_800_000_000_000;

    fn hc() -> HeaderControl {
        HeaderControl {
            signing_key_env: Some("K".into()),
            max_delay_ms: 5_000,
            max_signature_ttl_s: 3600,
        }
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderList {
        pairs.iter().copied().collect()
    }

    #[test]
    fn signature_matches_an_independent_implementation() {
        // python3: hmac.new(KEY, b"meshwright-fault-v1\n1800000600\n503\n\n\n\n", sha256).hexdigest()
        let sig = sign(KEY, 1_800_000_600, [Some("503"), None, None, None, None]);
        assert_eq!(
            sig,
            "t=1800000600,v1=814bd99be03d17522a3850e0ad357321d48943b48d295928d95c056569b212f6"
        );
    }

    #[test]
    fn no_fault_headers_is_absent() {
        assert_eq!(read(&hc(), Some(KEY), &req(&[]), NOW_MS), Control::Absent);
    }

    #[test]
    fn signed_headers_are_accepted() {
        let sig = sign(
            KEY,
            NOW_MS / 1000 + 60,
            [Some("503"), None, Some("50"), Some("100"), None],
        );
        let r = req(&[
            (ABORT, "503"),
            (ABORT_PERCENTAGE, "50"),
            (DELAY, "100"),
            (SIGNATURE, &sig),
        ]);
        let Control::Fault(f) = read(&hc(), Some(KEY), &r, NOW_MS) else {
            panic!("rejected")
        };
        assert_eq!(f.http_status, Some(503));
        assert_eq!(f.abort_percentage.ppm(), 500_000);
        assert_eq!(f.delay_ms, Some(100));
        assert_eq!(f.delay_percentage, Percentage::HUNDRED);
    }

    #[test]
    fn unsigned_headers_are_ignored_and_tampered_ones_rejected() {
        let r = req(&[(ABORT, "503")]);
        assert_eq!(read(&hc(), Some(KEY), &r, NOW_MS), Control::Absent);
        let sig = sign(
            KEY,
            NOW_MS / 1000 + 60,
            [Some("503"), None, None, None, None],
        );
        let tampered = req(&[(ABORT, "500"), (SIGNATURE, &sig)]);
        assert_eq!(
            read(&hc(), Some(KEY), &tampered, NOW_MS),
            Control::Rejected(Rejection::BadSignature)
        );
        let added = req(&[(ABORT, "503"), (DELAY, "100"), (SIGNATURE, &sig)]);
        assert_eq!(
            read(&hc(), Some(KEY), &added, NOW_MS),
            Control::Rejected(Rejection::BadSignature),
            "a header added after signing invalidates the signature"
        );
        let other_key = sign(
            b"another key of enough length!!!!",
            NOW_MS / 1000 + 60,
            [Some("503"), None, None, None, None],
        );
        let r = req(&[(ABORT, "503"), (SIGNATURE, &other_key)]);
        assert_eq!(
            read(&hc(), Some(KEY), &r, NOW_MS),
            Control::Rejected(Rejection::BadSignature)
        );
        for junk in ["", "t=1", "v1=00", "t=x,v1=00", "garbage"] {
            let r = req(&[(ABORT, "503"), (SIGNATURE, junk)]);
            assert_eq!(
                read(&hc(), Some(KEY), &r, NOW_MS),
                Control::Rejected(Rejection::BadSignature),
                "{junk}"
            );
        }
    }

    #[test]
    fn signatures_expire_and_cannot_live_forever() {
        let f = [Some("503"), None, None, None, None];
        let r = |sig: &str| req(&[(ABORT, "503"), (SIGNATURE, sig)]);
        let past = sign(KEY, NOW_MS / 1000, f);
        assert_eq!(
            read(&hc(), Some(KEY), &r(&past), NOW_MS),
            Control::Rejected(Rejection::Expired)
        );
        let far = sign(KEY, NOW_MS / 1000 + 3601, f);
        assert_eq!(
            read(&hc(), Some(KEY), &r(&far), NOW_MS),
            Control::Rejected(Rejection::TooLongLived)
        );
    }

    #[test]
    fn malformed_values_are_rejected_not_clamped() {
        let unsigned = HeaderControl {
            signing_key_env: None,
            ..hc()
        };
        for (h, v) in [
            (ABORT, "99"),
            (ABORT, "abc"),
            (ABORT_GRPC, "0"),
            (ABORT_GRPC, "17"),
            (DELAY, "5001"),
            (DELAY_PERCENTAGE, "101"),
            (ABORT_PERCENTAGE, "-1"),
        ] {
            assert_eq!(
                read(&unsigned, None, &req(&[(h, v)]), NOW_MS),
                Control::Rejected(Rejection::Malformed),
                "{h}: {v}"
            );
        }
    }

    #[test]
    fn without_required_signature_headers_act_directly() {
        let unsigned = HeaderControl {
            signing_key_env: None,
            ..hc()
        };
        let Control::Fault(f) = read(&unsigned, None, &req(&[(ABORT_GRPC, "14")]), NOW_MS) else {
            panic!()
        };
        assert_eq!(f.grpc_status, Some(14));
        assert_eq!(f.http_status, None);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_headers_never_panic(a in ".{0,12}", d in ".{0,12}", s in ".{0,100}") {
                let r = req(&[(ABORT, &a), (DELAY, &d), (SIGNATURE, &s)]);
                let _ = read(&hc(), Some(KEY), &r, NOW_MS);
            }
        }
    }
}
