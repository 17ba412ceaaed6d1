//! A local HTTP receiver on 127.0.0.1 that records every request and answers as the
//! test scripts it: a status (with extra headers), a hang, or a reset connection.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Status(u16, Vec<(String, String)>, String),
    Hang(Duration),
    /// `200 ok`, after a delay.
    Late(Duration),
    Reset,
    /// Bytes that are not an HTTP response.
    Raw(&'static [u8]),
}

#[derive(Clone)]
pub(crate) struct Receiver {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<Vec<Reply>>>,
    fallback: Arc<Mutex<Reply>>,
}

impl Receiver {
    /// A receiver answering `fallback` once `script` (used in order) runs out.
    pub(crate) async fn start(script: Vec<Reply>, fallback: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let r = Self {
            url,
            requests: Arc::default(),
            script: Arc::new(Mutex::new(script.into_iter().rev().collect())),
            fallback: Arc::new(Mutex::new(fallback)),
        };
        let me = r.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    me.requests.lock().expect("lock").push(req);
                    let reply = me
                        .script
                        .lock()
                        .expect("lock")
                        .pop()
                        .unwrap_or_else(|| me.fallback.lock().expect("lock").clone());
                    match reply {
                        Reply::Status(code, headers, body) => {
                            let mut head = format!(
                                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                                body.len()
                            );
                            for (k, v) in headers {
                                head.push_str(&format!("{k}: {v}\r\n"));
                            }
                            head.push_str("\r\n");
                            let _ = sock.write_all(head.as_bytes()).await;
                            let _ = sock.write_all(body.as_bytes()).await;
                            let _ = sock.shutdown().await;
                        }
                        Reply::Hang(d) => tokio::time::sleep(d).await,
                        Reply::Late(d) => {
                            tokio::time::sleep(d).await;
                            let _ = sock
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                                .await;
                            let _ = sock.shutdown().await;
                        }
                        Reply::Reset => drop(sock),
                        Reply::Raw(bytes) => {
                            let _ = sock.write_all(bytes).await;
                            let _ = sock.shutdown().await;
                        }
                    }
                });
            }
        });
        r
    }

    /// Adds `reply` at the end of the script (for a reply that names the
    /// receiver's own URL).
    pub(crate) fn then(&self, reply: Reply) {
        self.script.lock().expect("lock").insert(0, reply);
    }

    pub(crate) async fn ok() -> Self {
        Self::start(vec![], Reply::Status(200, vec![], "ok".into())).await
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    /// Waits (up to 10 s) until `n` requests arrived.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Request> {
        for _ in 0..1000 {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} requests, got {}", self.requests().len());
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}
