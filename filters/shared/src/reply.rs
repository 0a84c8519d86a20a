//! A local reply: what a filter sends in place of the upstream's response (a fault's abort, a
//! shed retry, a login redirect).

/// A reply sent in place of the upstream's (the glue hands it to `proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status; 200 for a gRPC reply (the gRPC status travels in `grpc-status`).
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Set for gRPC requests: Envoy then sends a trailers-only gRPC response with it.
    pub grpc_status: Option<u32>,
}

impl Reply {
    /// A plain HTTP reply.
    pub fn new(status: u16, headers: Vec<(String, String)>, body: String) -> Self {
        Self {
            status,
            headers,
            body,
            grpc_status: None,
        }
    }

    /// The headers as the host call takes them.
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_plain_reply_has_no_grpc_status_and_lends_its_headers() {
        let r = Reply::new(302, vec![("location".into(), "/".into())], String::new());
        assert_eq!(r.grpc_status, None);
        assert_eq!(r.header_pairs(), [("location", "/")]);
    }
}
