//! The workflow scenario of `cargo xtask e2e`: a workflow file served over
//! HTTP from the host (`rd.iguana.control_url`) that exercises env merging,
//! a service reached over host networking by its job's container, a failing
//! job with `continue_on_error`, a job skipped because the job it needs
//! failed, and a last job that checks the service was stopped.
//!
//! Every job runs the same image, `shenv`, which evaluates `$SCRIPT` from its
//! environment, so the workflow file holds all the test logic.

use std::io::{Read, Write};
use std::net::TcpListener;

use anyhow::{Context, Result};

/// Printed by the job `serve`: the merged environment.
pub const MARK_ENV: &str = "IGUANA-E2E env WHO=workflow SHARED=from-container iguana=true";
/// `serve` fetched a page from its service over 127.0.0.1.
pub const MARK_SERVICE: &str = "IGUANA-E2E service reached";
/// iguana's own lines about the failing and the skipped job.
pub const MARK_FAILED: &str = "job broken failed: exit status 3";
pub const MARK_CONTINUED: &str = "job broken failed; continuing (continue_on_error)";
pub const MARK_SKIPPED: &str = "job dependent skipped: needs broken which did not succeed";
/// The last job found nothing listening where the service was.
pub const MARK_STOPPED: &str = "IGUANA-E2E service stopped";
/// Must never appear: the skipped job's own output.
pub const MARK_DEPENDENT_RAN: &str = "IGUANA-E2E dependent ran";

/// The workflow file, for the registry `reg` as the guest sees it.
pub fn workflow(reg: &str) -> String {
    format!(
        r#"name: e2e workflow
env:
  WHO: workflow
  SHARED: from-workflow
jobs:
  serve:
    container:
      image: {reg}/shenv
      env:
        SHARED: from-container
        SCRIPT: |
          echo "IGUANA-E2E env WHO=$WHO SHARED=$SHARED iguana=$iguana"
          for i in 1 2 3 4 5 6 7 8 9 10; do
            if wget -q -O- http://127.0.0.1:8088/hello.txt; then echo "{MARK_SERVICE}"; break; fi
            busybox sleep 1
          done
    services:
      web:
        image: {reg}/shenv
        env:
          SCRIPT: |
            mkdir -p /www && echo service-says-hi > /www/hello.txt
            exec busybox httpd -f -p 127.0.0.1:8088 -h /www
  broken:
    container:
      image: {reg}/shenv
      env:
        SCRIPT: "echo IGUANA-E2E broken runs; echo disk too small > /iguana/reason; exit 3"
    continue_on_error: true
  dependent:
    container:
      image: {reg}/shenv
      env:
        SCRIPT: "echo {MARK_DEPENDENT_RAN}"
    needs: broken
  final:
    container:
      image: {reg}/shenv
      env:
        SCRIPT: |
          if wget -q -O- http://127.0.0.1:8088/hello.txt; then echo "IGUANA-E2E service still running"; else echo "{MARK_STOPPED}"; fi
"#
    )
}

/// Serves `body` to every request on 127.0.0.1, from a thread that lives as
/// long as the xtask; returns the port.
pub fn serve(body: String) -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0 for the workflow server")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    Ok(port)
}
