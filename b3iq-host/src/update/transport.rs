//! tough's transport over the workspace's reqwest (rustls): http(s) GETs streamed in chunks, so
//! tough's size limits and hash checks stop an endless or oversized body as it arrives.

use std::time::Duration;

use bytes::Bytes;
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

/// HTTP(S) transport: 404 and 410 are "file not found" (TUF's signal that no newer root exists);
/// any other failure is [`TransportErrorKind::Other`]. Connect timeout 10 s; each chunk must
/// arrive within 30 s.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
}

impl Default for HttpTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpTransport {
    /// A transport with its own connection pool, trusting the web roots.
    pub fn new() -> Self {
        Self::with_ca(None).unwrap_or_else(|_| HttpTransport {
            client: reqwest::Client::new(),
        })
    }

    /// A transport that trusts only the PEM certificate(s) in `ca_pem` (a self-signed control
    /// plane, a private CA) when given, else the web roots.
    ///
    /// # Errors
    /// A message when `ca_pem` holds no certificate or the client cannot be built.
    pub fn with_ca(ca_pem: Option<&str>) -> Result<Self, String> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(30));
        if let Some(pem) = ca_pem {
            b = crate::managed::trust_only(b, pem)?;
        }
        let client = b.build().map_err(|e| format!("http client: {e}"))?;
        Ok(HttpTransport { client })
    }
}

/// Checks that `pem` holds at least one certificate.
pub(crate) fn check_pem(pem: &str) -> Result<(), String> {
    crate::managed::trust_only(reqwest::Client::builder(), pem).map(|_| ())
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url,
            ));
        }
        let resp = self.client.get(url.clone()).send().await.map_err(|e| {
            TransportError::new_with_cause(TransportErrorKind::Other, url.clone(), e)
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Err(TransportError::new(TransportErrorKind::FileNotFound, url));
        }
        if !status.is_success() {
            return Err(TransportError::new_with_cause(
                TransportErrorKind::Other,
                url.clone(),
                format!("HTTP {status}"),
            ));
        }
        // A task pumps chunks into a small channel: the consumer's limits stop it by dropping
        // the receiver (the task then ends at its next send).
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, TransportError>>(4);
        tokio::spawn(async move {
            let mut resp = resp;
            loop {
                let item = match resp.chunk().await {
                    Ok(Some(b)) => Ok(b),
                    Ok(None) => return,
                    Err(e) => Err(TransportError::new_with_cause(
                        TransportErrorKind::Other,
                        url.clone(),
                        e,
                    )),
                };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}
