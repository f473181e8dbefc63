//! PID 1's side of the reporter (`report::pid1`) in a host process, with
//! the real `iguana report` child: against a receiver that takes
//! connections and never answers, `finish` returns after its own deadline
//! and the sender is gone (its held connections close). One test in this
//! file: pid1's state is one per process, as in PID 1.

#![allow(clippy::tests_outside_test_module)]

use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use iguana::report::{self, pid1};

#[test]
fn finish_does_not_wait_past_its_deadline_for_a_receiver_that_never_answers() {
    // Accepts, reads, never answers; reports each connection and, once the
    // peer is gone, its end (EOF or error).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel::<&'static str>();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            let _ = tx.send("connected");
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                let _ = tx.send("closed");
            });
        }
    });

    pid1::use_binary(std::path::Path::new(env!("CARGO_BIN_EXE_iguana")));
    pid1::configure(Some(&format!("http://127.0.0.1:{port}/events")), None, None);
    pid1::set_machine_id("m1");
    pid1::emit(report::heartbeat("job", 1));
    pid1::start();
    // Hang guard, not a measurement: the sender tried, then hangs on it.
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok("connected"));

    let limit = pid1::FLUSH_LIMIT;
    let started = Instant::now();
    pid1::finish(limit);
    let took = started.elapsed();
    eprintln!("finish({limit:?}) returned after {took:?}");
    assert!(took >= limit, "finish returned before its deadline with the event undelivered ({took:?})");
    assert!(took < Duration::from_secs(30), "finish waited {took:?}");
    // The sender was killed: its connection closes without an answer.
    let mut seen = Vec::new();
    while let Ok(what) = rx.recv_timeout(Duration::from_secs(30)) {
        seen.push(what);
        if what == "closed" {
            break;
        }
    }
    assert_eq!(seen.last(), Some(&"closed"), "{seen:?}");
}
