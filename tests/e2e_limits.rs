//! The edge under load (issues 20 and 33): what a client can make a
//! shipped Envoy hold. 2,000 token POSTs whose body never comes, each with
//! the largest head the shipped limit admits (`max_request_headers_kb:
//! 32`), against `envoy/envoy.yaml` and `envoy/native.yaml` as shipped
//! (ports swapped only), with two workers: Envoy's memory stays bounded
//! while they are held, a fresh mint is answered meanwhile, the request
//! timeout ends them, nothing of them stays allocated once they are gone
//! and the Wasm VMs keep nothing of a paused request; a second burst reuses
//! what the allocator kept of the first. The API's largest legitimate
//! requests pass the head limit, and a larger head is refused at once.
//! Also `fpgen serve`'s limits, and HTTP/2's stream limit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::Envoy;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PAUSED: usize = 2000;
/// The shipped configurations' `max_request_headers_kb`.
const HEAD_LIMIT: usize = 32 * 1024;
/// What Envoy allocates for one paused POST with the largest head
/// admitted, either module (measured: 85.4 KiB; 25.6 KiB with an empty
/// query: the stream and its connection; the rest is the head, as the
/// HTTP/1 codec read it and as the header map holds it).
const HELD_PER_POST: u64 = 88 * 1024;
const MIB: u64 = 1024 * 1024;

/// Envoy's resident memory, from `/proc`.
fn rss(envoy: &Envoy) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", envoy.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Envoy's memory at one moment: its resident set, and its allocator's
/// own account (`/memory`): bytes allocated, and bytes of physical memory
/// the allocator holds (allocated, or free and kept for reuse). What is
/// resident beyond the allocator's physical bytes is mostly the Wasm VMs'
/// linear memories and V8's heaps.
#[derive(Clone, Copy, Debug)]
struct Memory {
    rss: u64,
    allocated: u64,
    allocator_physical: u64,
}

impl Memory {
    fn of(envoy: &Envoy) -> Memory {
        let v: serde_json::Value =
            serde_json::from_slice(&envoy.admin_get("/memory").body).unwrap();
        let field = |name: &str| {
            v[name]
                .as_str()
                .and_then(|t| t.parse::<u64>().ok())
                .or_else(|| v[name].as_u64())
                .unwrap_or_else(|| panic!("no {name} in /memory: {v}"))
        };
        Memory {
            rss: rss(envoy),
            allocated: field("allocated"),
            allocator_physical: field("total_physical_bytes"),
        }
    }

    /// Resident memory outside Envoy's allocator (VMs, V8, code).
    fn outside_allocator(&self) -> u64 {
        self.rss.saturating_sub(self.allocator_physical)
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / MIB as f64;
        write!(
            f,
            "RSS {:.1} MiB (allocator: {:.1} allocated, {:.1} physical; outside it {:.1})",
            mib(self.rss),
            mib(self.allocated),
            mib(self.allocator_physical),
            mib(self.outside_allocator())
        )
    }
}

/// Raises this process's open-file limit (inherited by the Envoy it
/// starts) to at least `want`; fails the test when the hard limit is lower.
fn allow_open_files(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    #[allow(unsafe_code)]
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(
            limit.rlim_max >= want,
            "this test needs {want} open files; the hard limit is {}",
            limit.rlim_max
        );
        if limit.rlim_cur < want {
            limit.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// Waits (at most `secs`) until `done` holds; `Err` with the last value.
fn wait_for<T: std::fmt::Debug>(
    secs: u64,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> Result<T, T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let value = probe();
        if done(&value) {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(value);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What one burst of paused POSTs did: Envoy's memory while they were
/// held and after they were gone, and how many the request timeout ended
/// with 408.
struct Burst {
    holding: Memory,
    after: Memory,
    timed_out: usize,
    held_for: Duration,
    ended_after: Duration,
}

/// Opens [`PAUSED`] token POSTs whose body never comes, each with the
/// largest head admitted ([`paused_head`]); checks that a fresh mint is
/// answered while they are held; waits for the request timeout to end them.
fn burst(envoy: &Envoy, mint: &str) -> Burst {
    let head = paused_head();
    let port = envoy.port;
    let opened = Instant::now();
    let held: Vec<TcpStream> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..PAUSED / 4)
                        .map(|_| {
                            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                            c.write_all(head.as_bytes()).unwrap();
                            c
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let active = |envoy: &Envoy| envoy.stat("http.fpgen.downstream_rq_active").unwrap_or(0);
    let all_paused = wait_for(10, || active(envoy), |&n| n >= PAUSED as u64);
    assert!(
        all_paused.is_ok(),
        "{all_paused:?} of {PAUSED} requests reached Envoy"
    );
    std::thread::sleep(Duration::from_millis(300));
    let holding = Memory::of(envoy);
    assert_eq!(
        envoy.get(mint).status,
        200,
        "no mint while {PAUSED} are paused"
    );
    let held_for = opened.elapsed();
    // The request timeout (15 s) ends every one of them with 408.
    let mut timed_out = 0;
    for mut c in held {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut reply = [0u8; 12];
        if c.read_exact(&mut reply).is_ok() && reply.starts_with(b"HTTP/1.1 408") {
            timed_out += 1;
        }
    }
    let ended_after = opened.elapsed();
    let cx = |envoy: &Envoy| envoy.stat("http.fpgen.downstream_cx_active").unwrap_or(0);
    let closed = wait_for(10, || cx(envoy), |&n| n == 0);
    assert!(closed.is_ok(), "connections still open: {closed:?}");
    std::thread::sleep(Duration::from_secs(2));
    Burst {
        holding,
        after: Memory::of(envoy),
        timed_out,
        held_for,
        ended_after,
    }
}

/// A token POST whose body never comes, with the largest head the shipped
/// limit admits: its query padded to 128 bytes short of [`HEAD_LIMIT`].
fn paused_head() -> String {
    let head = |pad: usize| {
        format!(
            "POST /hms/fp/token?{}&pad={} HTTP/1.1\r\nHost: x\r\nContent-Type: \
             application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n",
            fpgen_fixtures::query(""),
            "a".repeat(pad)
        )
    };
    let pad = HEAD_LIMIT - 128 - head(0).len();
    head(pad)
}

/// One of the memory tests at a time: each holds 2,000 connections and
/// measures Envoy's memory.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Resident memory while the 2,000 are held, for both modules: at most
/// what the allocation bound below allows them (2,000 × 88 KiB, 172 MiB)
/// and 8 MiB of the allocator's own. How much of it is new depends on the
/// free pages Envoy's allocator kept from its start, which the burst
/// reuses: measured +142 to +152 MiB with the Wasm module (whose Envoy
/// starts with 34 to 40 MiB of them, from compiling the VMs) and +168 MiB
/// with the native one (none). Issue 33's goal of +150 MiB is therefore
/// met by some runs of the Wasm demo and not by the native one
/// (docs/security.md).
const HELD_BOUND: u64 = 180 * MIB;

#[test]
fn two_thousand_paused_posts_hold_bounded_memory_and_leave_nothing_behind_wasm() {
    paused_posts_hold_bounded_memory("envoy/envoy.yaml", HELD_BOUND);
}

#[test]
fn two_thousand_paused_posts_hold_bounded_memory_and_leave_nothing_behind_native() {
    paused_posts_hold_bounded_memory("envoy/native.yaml", HELD_BOUND);
}

fn paused_posts_hold_bounded_memory(file: &str, held_bound: u64) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    allow_open_files(8192);
    let port = common::free_port();
    let envoy = Envoy::start_shipped_workers(file, &[(10000, port), (9901, 0)], &[], 2);
    let mint = format!("/hms/fp/token?{}", fpgen_fixtures::query(""));
    // warm both workers' VMs
    for _ in 0..20 {
        assert_eq!(envoy.get(&mint).status, 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    let start = Memory::of(&envoy);
    let first = burst(&envoy, &mint);
    let second = burst(&envoy, &mint);
    eprintln!(
        "{file}: {PAUSED} paused POSTs with a {}-byte head, 2 workers:\n  start: {start}",
        paused_head().len()
    );
    for (i, b) in [&first, &second].into_iter().enumerate() {
        eprintln!(
            "  burst {}: held  {} ({:.1} s after the first)\n           after {} (the request \
             timeout ended them after {:.1} s, {} with 408)",
            i + 1,
            b.holding,
            b.held_for.as_secs_f64(),
            b.after,
            b.ended_after.as_secs_f64(),
            b.timed_out
        );
    }
    let kib = |b: u64| b / 1024;
    for b in [&first, &second] {
        assert_eq!(
            b.timed_out, PAUSED,
            "not every paused POST was ended with 408"
        );
        // While held: each paused request costs Envoy its head (the path
        // as the codec read it and as the header map holds it) and
        // buffers, and the VMs nothing that lasts. Before issue 20: 181 KiB
        // each with a 50 KiB query, the VMs +56 MiB; before issue 33 (no
        // head limit: a 50 KiB query) +268 MiB in all.
        let held = b.holding.rss.saturating_sub(start.rss);
        assert!(
            held <= held_bound,
            "+{} KiB while held ({} KiB per paused POST)",
            kib(held),
            kib(held / PAUSED as u64)
        );
        let allocated = b.holding.allocated.saturating_sub(start.allocated) / PAUSED as u64;
        assert!(
            allocated <= HELD_PER_POST,
            "{} KiB allocated per paused POST",
            kib(allocated)
        );
        let vm_growth = b
            .holding
            .outside_allocator()
            .saturating_sub(start.outside_allocator());
        assert!(
            vm_growth <= 24 * MIB,
            "outside the allocator: +{} KiB while held",
            kib(vm_growth)
        );
        // After: nothing of them remains allocated, and nothing outside
        // the allocator (the VMs) stays grown. Before issue 20 the VMs kept
        // +72 to +82 MiB.
        let allocated = b.after.allocated.saturating_sub(start.allocated);
        assert!(
            allocated <= 8 * MIB,
            "+{} KiB still allocated",
            kib(allocated)
        );
        let kept = b
            .after
            .outside_allocator()
            .saturating_sub(start.outside_allocator());
        assert!(
            kept <= 24 * MIB,
            "outside the allocator: +{} KiB after",
            kib(kept)
        );
    }
    // The allocator (tcmalloc) keeps the pages it freed, for Envoy's own
    // reuse: a second burst takes no more memory than the first, and what
    // stays resident never exceeds one burst's peak. When it returns them
    // to the system is its own affair (docs/security.md: within 80 s of a
    // burst held 2 s; not within 150 s of one held 17 s, or of these),
    // so it is measured, not asserted.
    let regrowth = second.holding.rss.saturating_sub(first.holding.rss);
    assert!(
        regrowth <= 32 * MIB,
        "the second burst took +{} KiB more",
        kib(regrowth)
    );
    // (The margin is the allocator's: on a machine busy with other work
    // the pages it keeps after the second burst once came to +20 MiB
    // above the first burst's peak, with nothing left allocated.)
    for b in [&first, &second] {
        let above_peak = b.after.rss.saturating_sub(first.holding.rss);
        assert!(
            above_peak <= 32 * MIB,
            "+{} KiB above the first burst's peak after",
            kib(above_peak)
        );
    }
    assert_eq!(envoy.get(&mint).status, 200);
}

/// `fpgen serve` with `args`, at most `open_files` descriptors.
fn serve(args: &[&str], open_files: Option<u32>) -> common::Serve {
    common::Serve::start_with(fpgen_fixtures::DEMO_CONFIG, args, open_files)
}

fn mint_path() -> String {
    format!("/hms/fp/token?{}", fpgen_fixtures::query(""))
}

/// How long until the peer closes `c` (reads until EOF or an error); `None`
/// if it is still open after `within`.
fn closed_within(mut c: TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    c.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
}

/// With 128 descriptors and a higher connection cap, 200 idle connections
/// exhaust them: `accept` fails, fpgen logs it, backs off and keeps
/// serving; once they close it mints again (before issue 20 it exited with
/// status 3 on the first failed accept).
#[test]
fn serve_outlives_descriptor_exhaustion() {
    let mut s = serve(&["--max-connections", "1000"], Some(128));
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", s.port)).unwrap())
        .collect();
    let logged = wait_for(10, || s.stderr(), |e| e.contains(" accept: "));
    assert!(logged.is_ok(), "no accept error logged: {logged:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.is_running(), "fpgen serve exited: {}", s.stderr());
    drop(idle);
    let get = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        mint_path()
    );
    let minted = wait_for(
        10,
        || common::try_raw(s.port, get.as_bytes()).map(|r| r.status),
        |r| *r == Ok(200),
    );
    assert!(
        minted.is_ok(),
        "no mint after the descriptors came back: {minted:?}"
    );
    assert!(s.is_running());
    let log = s.stderr();
    assert!(log.contains("Too many open files"), "{log}");
    assert!(log.contains("retrying in "), "{log}");
}

/// A request head that never completes, and a POST whose body never comes,
/// are closed after their time limits (before issue 20 they stayed open
/// for minutes); past --max-connections a connection waits in the backlog
/// until a slot frees.
#[test]
fn serve_closes_slow_requests_and_caps_connections() {
    // 3 s: the check that a third connection waits (500 ms) ends well
    // before the first slot frees, even on a loaded machine
    let s = serve(
        &[
            "--header-timeout",
            "3",
            "--body-timeout",
            "3",
            "--max-connections",
            "2",
        ],
        None,
    );
    let connect = || TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let mut slow_head = connect();
    slow_head
        .write_all(b"POST /hms/fp/token HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut slow_body = connect();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 10\r\n\r\nab",
        mint_path()
    );
    slow_body.write_all(head.as_bytes()).unwrap();
    // both slots are taken: a third connection is not served yet
    let mut third = connect();
    third
        .write_all(
            format!(
                "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                mint_path()
            )
            .as_bytes(),
        )
        .unwrap();
    let waiting = third.try_clone().unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut peek = [0u8; 1];
    assert!(
        (&waiting).read(&mut peek).is_err(),
        "a third connection was served past the cap of 2"
    );
    for (what, c) in [
        ("an incomplete head", slow_head),
        ("a body that never comes", slow_body),
    ] {
        let closed = closed_within(c, Duration::from_secs(15));
        assert!(
            closed.is_some_and(|t| t < Duration::from_secs(10)),
            "{what}: still open after {closed:?}"
        );
    }
    // the slots are free: the third is answered
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = Vec::new();
    let _ = third.read_to_end(&mut reply);
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

/// One h2c connection opens 1,000 token POSTs whose body never comes
/// against `envoy/envoy.yaml` as shipped: Envoy advertises at most 100
/// concurrent streams, refuses the streams past them (with RST_STREAM, or
/// by ending the connection with GOAWAY after the 100th, as Envoy 1.40
/// does for a client that opens them before it has read the settings), and
/// never holds more than 100 of them at once (before issue 20 one
/// connection carried all 1,000: +64 MiB).
#[test]
fn one_http2_connection_holds_at_most_100_paused_posts() {
    const STREAMS: u32 = 1000;
    let port = common::free_port();
    let envoy = Envoy::start_shipped("envoy/envoy.yaml", &[(10000, port), (9901, 0)]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let path = format!(
        "/hms/fp/token?{}&pad={}",
        fpgen_fixtures::query(""),
        "a".repeat(8 * 1024)
    );
    let headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", path.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
        ("content-length", "100"),
    ];
    let block = common::hpack_block(&headers);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(common::h2_frame(4, 0, 0, &[]));
    for i in 0..STREAMS {
        // HEADERS with END_HEADERS, without END_STREAM: the body never comes
        out.extend(common::h2_frame(1, 0x4, 2 * i + 1, &block));
    }
    let mut writer = s.try_clone().unwrap();
    let send = std::thread::spawn(move || writer.write_all(&out));
    let (mut advertised, mut refused, mut peak, mut goaway) = (None, 0u32, 0u64, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused < STREAMS - 100 && Instant::now() < deadline {
        let mut head = [0u8; 9];
        if s.read_exact(&mut head).is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).is_err() {
            break;
        }
        match kind {
            4 if flags & 1 == 0 => {
                for setting in payload.chunks_exact(6) {
                    if setting[..2] == [0, 3] {
                        advertised = Some(u32::from_be_bytes(setting[2..6].try_into().unwrap()));
                    }
                }
                let _ = s.write_all(&common::h2_frame(4, 1, 0, &[]));
            }
            // RST_STREAM REFUSED_STREAM (7)
            3 if payload == [0, 0, 0, 7] => refused += 1,
            7 => {
                // the last stream id Envoy processed: later ones were not
                let last = u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff;
                goaway = Some(last);
                peak = peak.max(envoy.stat("http.fpgen.downstream_rq_active").unwrap_or(0));
                break;
            }
            _ => {}
        }
        if refused % 100 == 0 {
            peak = peak.max(envoy.stat("http.fpgen.downstream_rq_active").unwrap_or(0));
        }
    }
    // the writer may meet a closed connection: that is Envoy's answer
    let _ = send.join().unwrap();
    peak = peak.max(envoy.stat("http.fpgen.downstream_rq_active").unwrap_or(0));
    // streams Envoy never took up: refused ones, and those after GOAWAY's
    let not_processed = goaway.map_or(0, |last| STREAMS - last.div_ceil(2));
    eprintln!(
        "h2c: advertised {advertised:?} streams; of {STREAMS}: {refused} refused, GOAWAY after \
         stream {goaway:?} ({not_processed} not processed); at most {peak} requests active"
    );
    assert_eq!(advertised, Some(100));
    assert!(
        refused + not_processed >= STREAMS - 100,
        "streams past the limit were taken up: {refused} refused, {not_processed} not processed"
    );
    assert!(peak <= 100, "{peak} requests active on one connection");
    let mint = format!("/hms/fp/token?{}", fpgen_fixtures::query(""));
    assert_eq!(envoy.get(&mint).status, 200);
}

/// A connection that sends nothing, and a keep-alive connection idle after
/// its answer, are closed after --header-timeout too: no client holds one
/// of fpgen serve's connection slots by waiting.
#[test]
fn serve_closes_idle_connections() {
    let s = serve(&["--header-timeout", "1"], None);
    let silent = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let mut kept = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    kept.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", mint_path()).as_bytes())
        .unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    for (what, c) in [
        ("a silent connection", silent),
        ("an idle keep-alive connection", kept),
    ] {
        let closed = closed_within(c, Duration::from_secs(10));
        assert!(
            closed.is_some_and(|t| t < Duration::from_secs(5)),
            "{what}: still open after {closed:?}"
        );
    }
}

/// Shrinks `c`'s receive buffer to 4 KiB, so that answers it does not read
/// fill it (and the server's send buffer) quickly.
fn small_receive_buffer(c: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt on an open socket with a pointer to a local c_int
    // and its size.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_RCVBUF)");
}

/// A client that pipelines requests and never reads the answers is cut
/// off, so it cannot hold a connection slot: after --send-timeout when its
/// answers back up (the wrapper `server::SendTimeout`, unit-tested on its
/// own), or after --header-timeout when the kernel stops handing fpgen its
/// requests. With one slot, another client is served soon after (found in
/// review: with no send timeout, the slot could be held for as long as the
/// client liked).
#[test]
fn serve_cuts_off_a_client_that_never_reads() {
    let s = serve(
        &[
            "--max-connections",
            "1",
            "--send-timeout",
            "1",
            "--header-timeout",
            "1",
        ],
        None,
    );
    let mut greedy = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    small_receive_buffer(&greedy);
    // 125,000 requests (5 MB) for error pages of 345 bytes: far more than
    // every buffer on the way holds
    let one = b"GET /hms/fp/token HTTP/1.1\r\nHost: x\r\n\r\n";
    let many: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 125_000)
        .collect();
    let stop = greedy.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = greedy.write_all(&many);
    });
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let get = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        mint_path()
    );
    let r = common::exchange(s.port, Duration::from_secs(20), get.as_bytes());
    let waited = started.elapsed();
    assert_eq!(
        r.map(|r| r.status),
        Ok(200),
        "the second client was not served"
    );
    assert!(
        waited < Duration::from_secs(10),
        "served only after {waited:?}"
    );
    eprintln!("a second client was served {waited:?} after the greedy one stalled");
    // end the greedy writer (its requests were never going to be read)
    let _ = stop.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
}

/// The largest Widevine mint the API allows, as a GET query: eight keys
/// (`kid`, `kid.1` to `kid.7`, each with its content key and options),
/// sixteen `wvExtension`s of 1,024 bytes (the most, each at the largest
/// payload; base64, its `+`, `/` and `=` percent-encoded as form encoders
/// send them), a 64-byte content id and a 32-character cookie. Its token is
/// the API's longest in practice (the longest possible, 25,404 characters,
/// needs key-store names of 255 bytes for all eight kids).
fn largest_widevine_mint() -> String {
    use base64::Engine as _;
    let mut q = format!(
        "customerAuthenticator={}&errorFormat=json&useHttps=true",
        fpgen_fixtures::AUTHENTICATOR
    );
    for key in 0..8 {
        let n = if key == 0 {
            String::new()
        } else {
            format!(".{key}")
        };
        q += &format!(
            "&kid{n}={:032x}&contentKey{n}={:032x}&securityLevel{n}=5&hdcpOutputControl{n}=4&trackType{n}=1",
            0x1000 + key,
            0x2000 + key
        );
    }
    for i in 0..16u8 {
        let payload: Vec<u8> = (0..1024u32)
            .map(|b| (b as u8).wrapping_mul(37).wrapping_add(i))
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(payload)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        q += &format!("&wvExtension=ext{}%2C{b64}", (b'a' + i) as char);
    }
    q += &format!(
        "&contentId={}&cookie={}&licenseDuration=86400&playbackDuration=3600&generalFlags=00000001&expirationTime=%2B86400",
        "c".repeat(64),
        "k".repeat(32)
    );
    q
}

/// The shipped limit on a request's head (`max_request_headers_kb: 32`) is
/// fitted to the API's largest legitimate requests: the largest Widevine
/// GET mint and the licence request that carries its token both pass it,
/// with room for a browser's other headers, while a head past it is
/// refused at once (431), before anything holds it.
#[test]
fn the_largest_legitimate_requests_pass_the_shipped_limits_and_a_larger_head_is_refused() {
    let port = common::free_port();
    let envoy = Envoy::start_shipped("envoy/envoy.yaml", &[(10000, port), (9901, 0)]);
    let query = largest_widevine_mint();
    let mint = common::get(port, &format!("/hms/wv/token?{query}"));
    assert_eq!(mint.status, 200, "{mint:?}");
    let url = mint.text();
    let url = url.trim_end();
    let path = url.split_once(":10000").map(|(_, p)| p).unwrap_or(url);
    let token = fpgen_fixtures::token_of_url(path);
    eprintln!(
        "largest Widevine GET mint: a {}-byte query; its licence request: a {}-byte path \
         (a token of {} characters)",
        query.len(),
        path.len(),
        token.len()
    );
    // a browser's other headers beside the licence URL
    let browser = [
        ("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
        ("Origin", "https://player.example.com"),
        ("Referer", "https://player.example.com/watch/some-long-title-of-the-film?list=abcdef0123456789&t=0"),
        ("Cookie", &"session=0123456789abcdef; ".repeat(40)),
        ("Accept", "*/*"),
        ("Accept-Language", "en-GB,en;q=0.9"),
        ("Content-Type", "application/octet-stream"),
    ];
    let licence = common::request(port, "POST", path, &browser, Some(b"a widevine challenge"));
    assert_eq!(licence.status, 200, "{licence:?}");
    assert_eq!(licence.header("x-demo-drm"), Some("widevine"));
    assert!(token.len() > 20_000 && query.len() > 22 * 1024);
    // past the limit: refused by Envoy's codec before any filter runs
    for pad in [33 * 1024, 50 * 1024] {
        let big = format!(
            "/hms/fp/token?{}&pad={}",
            fpgen_fixtures::query(""),
            "a".repeat(pad)
        );
        let r = common::get(port, &big);
        assert_eq!(r.status, 431, "a {pad}-byte pad: {r:?}");
    }
    drop(envoy);
}
