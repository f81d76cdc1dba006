use super::*;
use crate::telemetry::{Event, LeaseId, Sink};

fn sink_with_a_lease() -> Arc<MetricsSink> {
    let sink = Arc::new(MetricsSink::new().unwrap());
    let id = LeaseId::new("app", "shardId-7");
    sink.emit(
        Some(&id),
        &Event::LeaseStarted {
            shard: "shardId-7".into(),
            checkpoint: None,
        },
    );
    sink.emit(Some(&id), &Event::ItemsCompleted { items: 42 });
    sink
}

fn ctx() -> Context {
    Context::new(sink_with_a_lease())
}

/// Reads the given chunks one `read` at a time, then `end`.
struct Chunks {
    chunks: Vec<Vec<u8>>,
    end: io::ErrorKind,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.chunks.is_empty() {
            return match self.end {
                io::ErrorKind::UnexpectedEof => Ok(0),
                kind => Err(kind.into()),
            };
        }
        let c = self.chunks.remove(0);
        buf[..c.len()].copy_from_slice(&c);
        Ok(c.len())
    }
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[test]
fn a_head_split_anywhere_is_read_to_its_end() {
    let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nBODY";
    let mut r = Chunks {
        chunks: head.iter().map(|b| vec![*b]).collect(),
        end: io::ErrorKind::UnexpectedEof,
    };
    let got = read_head(&mut r, later()).unwrap();
    assert_eq!(got, &head[..head.len() - 4]);
}

#[test]
fn a_head_is_bounded_and_timed() {
    let mut big = Chunks {
        chunks: vec![vec![b'a'; 1000]; 20],
        end: io::ErrorKind::UnexpectedEof,
    };
    assert!(matches!(
        read_head(&mut big, later()),
        Err(HeadError::TooLarge)
    ));
    let mut slow = Chunks {
        chunks: vec![b"GET / HTTP/1.1\r\n".to_vec()],
        end: io::ErrorKind::WouldBlock,
    };
    assert!(matches!(
        read_head(&mut slow, later()),
        Err(HeadError::Timeout)
    ));
    // Past the deadline in all, however the bytes trickle.
    let mut trickle = Chunks {
        chunks: vec![b"G".to_vec(); 10],
        end: io::ErrorKind::UnexpectedEof,
    };
    assert!(matches!(
        read_head(&mut trickle, Instant::now()),
        Err(HeadError::Timeout)
    ));
    let mut closed = Chunks {
        chunks: vec![b"GET / HT".to_vec()],
        end: io::ErrorKind::UnexpectedEof,
    };
    assert!(matches!(
        read_head(&mut closed, later()),
        Err(HeadError::Closed)
    ));
}

#[test]
fn parse_takes_the_method_and_target_or_answers_400() {
    assert_eq!(
        parse(b"GET /status.json?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap(),
        ("GET".to_owned(), "/status.json?x=1".to_owned())
    );
    assert_eq!(
        parse(b"\x16\x03\x01garbage\r\n\r\n").unwrap_err().status,
        400
    );
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(parse(head.as_bytes()).unwrap_err().status, 431);
}

#[test]
fn routes_answer_metrics_status_and_page_and_refuse_the_rest() {
    let c = ctx();
    let m = routes::respond("GET", "/metrics", &c);
    assert_eq!(
        (m.status, m.content_type),
        (200, crate::metrics::CONTENT_TYPE)
    );
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        text.contains(r#"rsmld_items_total{application="app",shard="shardId-7"} 42"#),
        "{text}"
    );

    let s = routes::respond("GET", "/status.json?now", &c);
    assert_eq!((s.status, s.content_type), (200, "application/json"));
    let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["leases_attached"], 1);
    assert_eq!(v["leases"][0]["shard"], "shardId-7");
    assert_eq!(v["leases"][0]["items"], 42);
    assert_eq!(v["leases"][0]["state"], "running");
    assert!(v["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert!(v["time"].as_f64().unwrap() > 1.6e9);

    let p = routes::respond("GET", "/", &c);
    assert_eq!(
        (p.status, p.content_type),
        (200, "text/html; charset=utf-8")
    );
    assert_eq!(p.body, routes::STATUS_PAGE.as_bytes());

    assert_eq!(routes::respond("GET", "/nope", &c).status, 404);
    assert_eq!(routes::respond("POST", "/nope", &c).status, 404);
    for method in ["POST", "HEAD", "PUT", "DELETE"] {
        for path in ["/", "/metrics", "/status.json"] {
            let r = routes::respond(method, path, &c);
            assert_eq!(r.status, 405, "{method} {path}");
            let wire = String::from_utf8(r.to_bytes()).unwrap();
            assert!(wire.contains("\r\nAllow: GET\r\n"), "{wire}");
        }
    }
}

/// The page works offline: no script, style, image or font from anywhere else, and it
/// polls the JSON it is served with.
#[test]
fn the_status_page_is_self_contained() {
    let page = routes::STATUS_PAGE;
    for outside in [
        "src=", "href=", "@import", "url(", "http://", "https://", "//cdn",
    ] {
        assert!(
            !page.contains(outside),
            "the page refers outside: {outside}"
        );
    }
    assert!(page.contains(r#"fetch("status.json""#));
    assert!(page.contains("setTimeout(poll, POLL_MS)") && page.contains("const POLL_MS = 2000;"));
    // Data only as text.
    assert!(!page.contains("innerHTML"));
}

#[test]
fn a_response_has_its_length_and_closes() {
    let r = Response::text(404, "gone\n").to_bytes();
    let r = String::from_utf8(r).unwrap();
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
    assert!(r.contains("\r\nContent-Length: 5\r\n"));
    assert!(r.contains("\r\nConnection: close\r\n"));
    assert!(r.ends_with("\r\n\r\ngone\n"));
}

/// One request over a real connection: the status code and the body.
fn get(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(request).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[test]
fn the_listener_answers_over_tcp_and_stops_when_dropped() {
    let server = start("127.0.0.1:0".parse().unwrap(), sink_with_a_lease()).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let (status, body) = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    assert!(body.contains("rsmld_items_total"), "{body}");
    // A body after a refused method is read away: the answer arrives whole.
    let post = format!(
        "POST /metrics HTTP/1.1\r\nContent-Length: 20000\r\n\r\n{}",
        "x".repeat(20000)
    );
    assert_eq!(get(addr, post.as_bytes()).0, 405);
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(MAX_HEAD));
    assert_eq!(get(addr, huge.as_bytes()).0, 431);
    assert_eq!(get(addr, b"BREW /pot HTCPCP/1.0\r\n\r\n").0, 400);
    drop(server);
    assert!(TcpStream::connect(addr).is_err(), "still listening");
}

#[test]
fn a_silent_client_holds_up_no_other_and_gets_408() {
    let server = start("127.0.0.1:0".parse().unwrap(), sink_with_a_lease()).unwrap();
    let addr = server.local_addr();
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.write_all(b"GET /metr").unwrap();
    let t = Instant::now();
    assert_eq!(get(addr, b"GET /status.json HTTP/1.1\r\n\r\n").0, 200);
    assert!(t.elapsed() < IO_TIMEOUT, "waited for the silent client");
    silent
        .set_read_timeout(Some(IO_TIMEOUT + Duration::from_secs(30)))
        .unwrap();
    let mut out = String::new();
    silent.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
}

#[test]
fn an_address_in_use_is_an_error_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = start(addr, sink_with_a_lease()).unwrap_err();
    assert!(matches!(e, HttpError::Bind { .. }));
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("--metrics-listen {addr}: cannot listen: ")),
        "{text}"
    );
}

/// A client that keeps trickling bytes after its request holds an answer thread for about
/// a second, not for as long as it trickles: the server closes the connection under it (its
/// writes then fail).
#[test]
fn a_trickling_client_is_closed_after_its_answer() {
    let server = start("127.0.0.1:0".parse().unwrap(), sink_with_a_lease()).unwrap();
    let mut c = TcpStream::connect(server.local_addr()).unwrap();
    c.write_all(b"POST /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    // The answer, then the server's end of sending (a half close: it still reads).
    c.read_to_end(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
    // At most 30 s of trickling: the server must have closed long before.
    let closed = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        c.write_all(b"x").is_err()
    });
    assert!(closed, "the server read the trickle for 30 s");
}
