//! Follows one symbol's book for a while, reconnecting as needed, then prints it as one JSON
//! line with decimal strings exactly as the server's `format=json` prints them:
//!
//! ```text
//! cargo run -p tickcast-client --example book -- --url ws://127.0.0.1:8080/ws --symbol BTC-USD --depth 10 --seconds 5
//! {"symbol":"BTC-USD","seq":1234,"bids":[["65000.10","1.500000"],...],"asks":[...],"reconnects":0,"resumed":0}
//! ```
//!
//! `--url` may be given more than once (endpoints tried in turn). `reconnects` counts the
//! connections opened after the first, `resumed` the reconnections whose streams were all
//! recovered. Exits with status 1 if the book never became whole, 2 on bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use tickcast_client::{BookView, Client, ConnectionState, Event, Resumed};

/// The printed line, fields in this order.
#[derive(serde::Serialize)]
struct Line<'a> {
    symbol: &'a str,
    seq: u64,
    bids: Vec<[String; 2]>,
    asks: Vec<[String; 2]>,
    reconnects: u64,
    resumed: u64,
}

struct Args {
    urls: Vec<String>,
    symbol: String,
    depth: u16,
    seconds: f64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        urls: Vec::new(),
        symbol: String::new(),
        depth: 25,
        seconds: 10.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.urls.push(value()?),
            "--symbol" => a.symbol = value()?,
            "--depth" => a.depth = value()?.parse().map_err(|e| format!("--depth: {e}"))?,
            "--seconds" => {
                a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.urls.is_empty() || a.symbol.is_empty() {
        return Err("usage: book --url URL --symbol SYM [--depth D] [--seconds S]".into());
    }
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("book: {e}");
            return ExitCode::from(2);
        }
    };
    let built = Client::builder(a.urls)
        .depth(a.depth)
        .symbols([a.symbol.clone()])
        .build();
    let (client, mut events) = match built {
        Ok(c) => c,
        Err(e) => {
            eprintln!("book: {e}");
            return ExitCode::from(2);
        }
    };
    let mut book: Option<BookView> = None;
    let (mut opens, mut resumed) = (0u64, 0u64);
    let deadline = tokio::time::sleep(Duration::from_secs_f64(a.seconds.max(0.0)));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            ev = events.next() => match ev {
                None => break,
                Some(Event::Book(u)) => book = Some(u.book),
                Some(Event::Resync(r)) => {
                    eprintln!("book: {} resyncing: {:?}", r.symbol, r.cause);
                    book = None;
                }
                Some(Event::Connection(state)) => {
                    match &state {
                        ConnectionState::Open { .. } => opens += 1,
                        ConnectionState::Subscribed { resumed: Resumed::Recovered, .. } => resumed += 1,
                        ConnectionState::Subscribed { resumed: Resumed::NotRecovered { .. }, .. } => {
                            book = None;
                        }
                        ConnectionState::Reconnecting { delay, attempt, cause } => {
                            eprintln!("book: reconnecting in {} ms (attempt {attempt}): {cause}", delay.as_millis());
                        }
                        ConnectionState::Closed { cause } => {
                            eprintln!("book: stopped: {cause:?}");
                            break;
                        }
                        _ => {}
                    }
                }
                Some(Event::ServerError(e)) => eprintln!("book: server error {}: {}", e.code, e.message),
                Some(_) => {}
            },
        }
    }
    client.close();
    let Some(book) = book else {
        eprintln!("book: {} never became whole", a.symbol);
        return ExitCode::FAILURE;
    };
    let (bids, asks) = book.to_decimal_strings();
    let line = Line {
        symbol: book.symbol(),
        seq: book.seq(),
        bids,
        asks,
        reconnects: opens.saturating_sub(1),
        resumed,
    };
    match serde_json::to_string(&line) {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("book: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
