//! A real HTTP/1.1 server on 127.0.0.1 (an ephemeral port), serving the bytes
//! registered with [`ImageServer::serve`]. One thread per connection; every
//! response closes its connection. Unknown paths get 404.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

pub struct ImageServer {
    port: u16,
    delay_ms: Arc<AtomicU64>,
    routes: Arc<Mutex<HashMap<String, Response>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl ImageServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the test HTTP server");
        let port = listener.local_addr().expect("local address").port();
        let routes: Arc<Mutex<HashMap<String, Response>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let delay_ms: Arc<AtomicU64> = Arc::default();
        let (r, h, d) = (routes.clone(), hits.clone(), delay_ms.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, h) = (r.clone(), h.clone());
                let delay = Duration::from_millis(d.load(Ordering::Relaxed));
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = handle(stream, &r, &h);
                });
            }
        });
        Self {
            port,
            delay_ms,
            routes,
            hits,
        }
    }

    /// Makes every later response wait `delay` (a slow origin).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn serve(&self, path: &str, status: u16, content_type: &str, body: Vec<u8>) -> String {
        self.routes.lock().expect("routes").insert(
            path.to_owned(),
            Response {
                status,
                content_type: content_type.to_owned(),
                body,
            },
        );
        self.url(path)
    }

    /// How many requests were received in all.
    pub fn total_hits(&self) -> usize {
        self.hits.lock().expect("hits").values().sum()
    }

    /// How many requests `path` received.
    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("hits")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

fn handle(
    stream: TcpStream,
    routes: &Mutex<HashMap<String, Response>>,
    hits: &Mutex<HashMap<String, usize>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    *hits.lock().expect("hits").entry(path.clone()).or_default() += 1;
    let response = routes
        .lock()
        .expect("routes")
        .get(&path)
        .cloned()
        .unwrap_or(Response {
            status: 404,
            content_type: "text/plain".into(),
            body: b"not found".to_vec(),
        });
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )?;
    stream.write_all(&response.body)?;
    stream.flush()
}
