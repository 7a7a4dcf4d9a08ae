//! A null milter on indymilter: the baseline that `milter-bench` compares the real milter
//! with. It binds the way the real milter does (`TcpSocket`, `SO_REUSEADDR`, `TCP_NODELAY`,
//! a listen backlog of 4096), allows 10,000 connections, and has connect, helo, mail and
//! rcpt callbacks that only answer "continue": the protocol exchange has the shape of the
//! real milter's (indymilter negotiates "no such stage" for the callbacks that are absent).
//!
//! ```text
//! cargo run --release --example null-milter -- 8899 [--current-thread]
//! ```
//!
//! Listens on 127.0.0.1:PORT until SIGTERM or SIGINT. The runtime is tokio's multi-thread
//! one (a worker per core), as in the real milter; `--current-thread` runs everything on
//! one thread instead.

use indymilter::{Callbacks, Config, Status};
use std::{net::SocketAddr, process::ExitCode};
use tokio::{
    net::TcpSocket,
    signal::unix::{signal, SignalKind},
};

const USAGE: &str = "usage: null-milter PORT [--current-thread]";
const LISTEN_BACKLOG: u32 = 4096;
const MAX_CONNECTIONS: usize = 10_000;

fn main() -> ExitCode {
    let mut port = None;
    let mut current_thread = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--current-thread" => current_thread = true,
            _ => match arg.parse::<u16>() {
                Ok(p) if port.is_none() => port = Some(p),
                _ => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            },
        }
    }
    let Some(port) = port else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };

    let runtime = if current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("null-milter: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(SocketAddr::from(([127, 0, 0, 1], port)))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("null-milter: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;

    let callbacks: Callbacks<()> = Callbacks::new()
        .on_connect(|_, _, _| Box::pin(async { Status::Continue }))
        .on_helo(|_, _| Box::pin(async { Status::Continue }))
        .on_mail(|_, _| Box::pin(async { Status::Continue }))
        .on_rcpt(|_, _| Box::pin(async { Status::Continue }));
    let config = Config {
        max_connections: MAX_CONNECTIONS,
        ..Default::default()
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    indymilter::run(listener, callbacks, config, shutdown).await
}
