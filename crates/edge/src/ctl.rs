//! `changeover-edge ctl`: the client of the control socket that the Docker
//! exec API runs inside the edge container (one request, or a session of
//! many), and the blocking round trip the watcher uses.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use changeover_core::edge::{EdgeErrorCode, Request, CTL_SESSION_GREETING};

use crate::control::{error, MAX_CONTROL_LINE, SOCKET};

/// `changeover-edge ctl REQUEST`: one round trip to the serving process.
/// Prints the JSON answer; exits 0 when one was printed (even an error
/// answer), 1 when the edge could not be asked.
///
/// `changeover-edge ctl -`: a session. Prints [`CTL_SESSION_GREETING`], then
/// answers each request line read from stdin with one line, until stdin
/// closes. One `docker exec` then carries many requests: cheaper than an
/// exec per request, and the answers are read while the process is alive
/// (the daemon can lose the output of an exec that exits at once).
pub fn run_client(dir: &Path, request: &str) -> ExitCode {
    let socket = dir.join(SOCKET);
    if request == "-" {
        return run_session(&socket);
    }
    if let Ok(Request::CertPut { .. }) = serde_json::from_str::<Request>(request) {
        // A command line is visible to every user of the machine (and of
        // the daemon, for an exec): a private key never travels on one.
        let refused = error(
            EdgeErrorCode::BadRequest,
            "cert-put carries a private key: send it in a session (ctl -), not on the command line",
        );
        println!("{}", serde_json::to_string(&refused).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    match round_trip(&socket, request) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("changeover-edge: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_session(socket: &Path) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if writeln!(out, "{CTL_SESSION_GREETING}")
        .and_then(|_| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    let mut stdin = std::io::stdin().lock();
    loop {
        let mut line = Vec::new();
        match (&mut stdin)
            .take(MAX_CONTROL_LINE + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() as u64 > MAX_CONTROL_LINE {
            // The rest of that line cannot be told from a next request: stop.
            let refused = error(
                EdgeErrorCode::BadRequest,
                format!("a control request longer than {MAX_CONTROL_LINE} bytes is refused"),
            );
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&refused).unwrap_or_default()
            );
            break;
        }
        let Ok(line) = String::from_utf8(line) else {
            let refused = error(EdgeErrorCode::BadRequest, "a control request is not UTF-8");
            if writeln!(
                out,
                "{}",
                serde_json::to_string(&refused).unwrap_or_default()
            )
            .and_then(|_| out.flush())
            .is_err()
            {
                break;
            }
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        let answer = round_trip(socket, &line).unwrap_or_else(|e| {
            serde_json::to_string(&error(EdgeErrorCode::Internal, e)).unwrap_or_default()
        });
        if writeln!(out, "{answer}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// Sends one request to the serving process; its one-line answer (an error
/// answer for a request that does not parse).
pub fn round_trip(socket: &Path, request: &str) -> Result<String, String> {
    if let Err(e) = serde_json::from_str::<Request>(request) {
        let r = error(EdgeErrorCode::BadRequest, format!("bad request: {e}"));
        return Ok(serde_json::to_string(&r).unwrap_or_default());
    }
    let result = (|| -> std::io::Result<String> {
        let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
        stream.write_all(request.trim().as_bytes())?;
        stream.write_all(b"\n")?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line)
    })();
    match result {
        Ok(line) if !line.trim().is_empty() => Ok(line.trim().to_string()),
        Ok(_) => Err("the edge closed the control socket without an answer".into()),
        Err(e) => Err(format!(
            "cannot reach the edge at {}: {e}",
            socket.display()
        )),
    }
}
