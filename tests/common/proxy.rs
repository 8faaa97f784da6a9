//! A loopback TCP proxy that records every byte clients send through it, so
//! tests can see exactly what went over the wire (Redis commands, HTTP
//! request headers).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct TcpRecorder {
    pub addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl TcpRecorder {
    /// Listens on a free loopback port and forwards every connection to
    /// `upstream`. Runs on the current tokio runtime until it ends.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = sent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upstream = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                            record.lock().unwrap().extend_from_slice(&buf[..n]);
                            if server_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = server_write.shutdown().await;
                    };
                    let downstream = tokio::io::copy(&mut server_read, &mut client_write);
                    let _ = tokio::join!(upstream, downstream);
                });
            }
        });
        Self { addr, sent }
    }

    /// Everything clients sent since the last reset.
    pub fn sent(&self) -> Vec<u8> {
        self.sent.lock().unwrap().clone()
    }

    /// Forgets what was sent so far.
    pub fn reset(&self) {
        self.sent.lock().unwrap().clear();
    }
}

/// One HTTP/1.1 request as recorded: method, path and headers.
#[derive(Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a recorded HTTP/1.1 byte stream (several connections' worth,
/// keep-alive included) into requests, skipping bodies by
/// `Content-Length`.
pub fn http_requests(mut bytes: &[u8]) -> Vec<RecordedRequest> {
    let mut requests = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = request.parse(bytes) else {
            break;
        };
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let recorded = RecordedRequest {
            method: request.method.unwrap_or_default().to_owned(),
            path: request.path.unwrap_or_default().to_owned(),
            headers,
        };
        let body_len: usize = recorded
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        bytes = &bytes[(head_len + body_len).min(bytes.len())..];
        requests.push(recorded);
    }
    requests
}
