//! `fpgen`: the operator's command line. Keys and authenticators for the
//! configuration, offline minting and inspection of tokens, configuration
//! checks, and `serve` (the token endpoint without Envoy).

#![deny(clippy::too_many_lines)]
use clap::{Parser, Subcommand};
use fpgen::config::Config;
use fpgen::ids::{CustomerId, KeyId};
use fpgen::service::{self, Host, SystemHost};
use fpgen::token::UntrustedToken;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  refused input: an API error (mint), an invalid token (inspect), an invalid configuration
  2  usage error
  3  I/O error (a file that cannot be read)";

#[derive(Parser)]
#[command(name = "fpgen", version = fpgen::stats::VERSION_BUILD, about = "FairPlay licence tokens at the edge: the operator's tool", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new random sealing key in the configuration's form: {"id": …, "key": …}
    #[command(after_help = EXIT_CODES)]
    Keygen {
        /// The key id (1 to 32 characters of [A-Za-z0-9._-]); default k-YYYYMMDD-<random>
        #[arg(long, conflicts_with = "hex")]
        id: Option<String>,
        /// Print only the key's 64 hex digits, for an environment variable or a
        /// Kubernetes Secret that the configuration names with {"env": "VARIABLE"}
        #[arg(long)]
        hex: bool,
    },
    /// Create a customer authenticator, or digest an existing one, for customers[].authenticator_sha256
    #[command(after_help = EXIT_CODES)]
    Authenticator {
        /// Create a new authenticator for this customer id
        #[arg(long, conflicts_with = "digest", required_unless_present = "digest")]
        customer: Option<String>,
        /// Digest an existing authenticator `<id>,<secret>` (`-` reads it from standard input)
        #[arg(long)]
        digest: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Mint a licence URL offline, with the same parameters, validation and error codes as the HTTP API
    #[command(after_help = EXIT_CODES)]
    Mint {
        /// The filter configuration (JSON)
        #[arg(long)]
        config: PathBuf,
        /// The DRM of the token, as its endpoint (/hms/fp/token, /hms/wv/token, /hms/pr/token) would mint it; PlayReady's is printed as its endpoint answers it (JSON)
        #[arg(long, default_value = "fairplay", value_parser = ["fairplay", "widevine", "playready"])]
        drm: String,
        /// A whole query string, sent as it is (`'customerAuthenticator=…&contentKey=…&iv=…'`)
        #[arg(long, required_unless_present = "params")]
        query: Option<String>,
        /// `name=value` parameters; fpgen form-encodes each value (so `&`, `+` and spaces are kept)
        params: Vec<String>,
    },
    /// Open a token (or a whole licence URL, or PlayReady's answer) with the configuration's keys and print its contents as JSON
    #[command(after_help = EXIT_CODES)]
    Inspect {
        /// The filter configuration (JSON)
        #[arg(long)]
        config: PathBuf,
        /// Include the content key in the output
        #[arg(long)]
        show_content_key: bool,
        /// Check expiry against this Unix time instead of now
        #[arg(long)]
        now: Option<i64>,
        /// Also print an authentic token that is refused (expired, or for the
        /// other environment), marked with "refused"; still exits 1
        #[arg(long)]
        show_refused: bool,
        /// The token, a URL with ?ExpressPlayToken=, or PlayReady's JSON answer
        token: String,
    },
    /// Validate a configuration file and list every problem with its field
    #[command(after_help = EXIT_CODES)]
    CheckConfig {
        /// The filter configuration (JSON)
        file: PathBuf,
    },
    /// Serve /hms/fp/token over plain HTTP/1.1 (no Envoy), same behaviour as the filter
    #[command(after_help = SERVE_LIMITS)]
    Serve(ServeArgs),
    /// Serve Envoy's rate-limit protocol (ShouldRateLimit) on Redis: budgets across a fleet
    #[command(after_help = RATELIMIT_HELP)]
    Ratelimit(RatelimitArgs),
}

const SERVE_LIMITS: &str = "\
Limits: no client can stop the service or hold it without bound. At most
--max-connections connections are served at once; more wait in the listen
backlog. A connection is closed when its request head is not complete
within --header-timeout seconds (so is one idle that long, before or after
a request), when its POST body is not complete within --body-timeout
seconds, or when an answer waits --send-timeout seconds for the client to
read it. Each connection takes a file descriptor: when accepting fails (the
descriptor limit, `ulimit -n`, reached), fpgen logs it, waits (10 ms,
doubling up to 1 s) and accepts again; it never exits for it.

Exit codes:
  0  success
  1  refused input: an invalid configuration
  2  usage error
  3  I/O error (the configuration cannot be read, the address cannot be bound)";

const RATELIMIT_HELP: &str = "\
Envoy's global rate-limit protocol (envoy.service.ratelimit.v3.RateLimitService,
as envoyproxy/ratelimit serves it) on a Redis primary, with no configuration of
its own: each descriptor to count carries its limit (RateLimitDescriptor.limit),
and one without is answered OK, uncounted. A request is admitted only if every
descriptor's used + hits <= limit, and only then counted, in one atomic Lua
script: exact across any number of services on one Redis. Counts are per fixed
window of the limit's unit (second ... year) on Redis's clock. gRPC health
(grpc.health.v1) on the same address; /stats and /ready over HTTP on --admin.
The service serves at once, Redis up or not: until Redis answers, requests get
UNAVAILABLE, gRPC health NOT_SERVING and /ready 503, with the reason (also
logged: unreachable, refused, authentication failed); it tries Redis again
every 500 ms at most, and checks a connection every second.

Security: anyone who reaches the gRPC address can spend or refill any budget.
Serve it on loopback or inside a mesh with mutual TLS, or give it
--tls-cert, --tls-key and --tls-client-ca (mutual TLS, Envoy's cluster then
presents a client certificate); never on a public port. A call carries at
most 8 descriptors of 8 entries of 256 bytes (64 KiB in all); negative hits
are refused unless --allow-negative-hits. Give Redis's password in
FPGEN_REDIS_URL or --redis-password-file, never on the command line.
The log (stderr) is written by a thread of its own; FPGEN_LOG sets its
level (error, warn, info, debug).

Exit codes:
  0  success
  2  usage error
  3  I/O error (an address cannot be bound, --redis is not a Redis URL, a
     file cannot be read, TLS files that do not make a certificate and key)";

/// Why a command failed, and so its exit code.
enum Failure {
    Refused(String),
    Io(String),
}

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Keygen { id, hex } => keygen(id, hex),
        Command::Authenticator {
            customer,
            digest,
            json,
        } => authenticator(customer, digest, json),
        Command::Mint {
            config,
            drm,
            query,
            params,
        } => mint(&config, &drm, query, &params),
        Command::Inspect {
            config,
            show_content_key,
            now,
            show_refused,
            token,
        } => inspect(&config, show_content_key, now, show_refused, &token),
        Command::CheckConfig { file } => check_config(&file),
        Command::Serve(args) => serve(args),
        Command::Ratelimit(args) => {
            let _log = fpgen::logging::init();
            let on_command_line = matches
                .subcommand_matches("ratelimit")
                .and_then(|m| m.value_source("redis"))
                == Some(clap::parser::ValueSource::CommandLine);
            ratelimit(args, on_command_line)
        }
    };
    finish(result)
}

/// `fpgen serve`'s arguments.
#[derive(clap::Args)]
struct ServeArgs {
    /// The filter configuration (JSON)
    #[arg(long)]
    config: PathBuf,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Worker threads
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Connections served at once; more wait in the listen backlog until one closes
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Seconds a client has to send a request's head (request line and headers); then the connection is closed
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// Seconds a client has to send a POST body after its head; then the connection is closed
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_timeout: u64,
    /// Seconds an answer may wait for the client to read it; then the connection is closed
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    send_timeout: u64,
    /// URL of the rate-limit service that keeps fleet budgets (http://127.0.0.1:8081); needed when a customer has a fleet_budget
    #[arg(long)]
    rate_limit_service: Option<String>,
    /// PEM file of the authorities that sign the rate-limit service's certificate: TLS to it
    /// (an https:// --rate-limit-service)
    #[arg(long, requires = "rate_limit_service")]
    rate_limit_ca: Option<PathBuf>,
    /// PEM client certificate presented to the rate-limit service (mutual TLS; with
    /// --rate-limit-key and --rate-limit-ca)
    #[arg(long, requires_all = ["rate_limit_key", "rate_limit_ca"])]
    rate_limit_cert: Option<PathBuf>,
    /// PEM private key of --rate-limit-cert
    #[arg(long, requires = "rate_limit_cert")]
    rate_limit_key: Option<PathBuf>,
}

/// `fpgen serve`: serves until the process ends.
fn serve(args: ServeArgs) -> Result<(), Failure> {
    let ServeArgs {
        config,
        listen,
        threads,
        max_connections,
        header_timeout,
        body_timeout,
        send_timeout,
        rate_limit_service,
        rate_limit_ca,
        rate_limit_cert,
        rate_limit_key,
    } = args;
    let limits = fpgen::serve::Limits {
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        header_timeout: std::time::Duration::from_secs(header_timeout),
        body_timeout: std::time::Duration::from_secs(body_timeout),
        send_timeout: std::time::Duration::from_secs(send_timeout),
    };
    let _log = fpgen::logging::init();
    let fleet = fleet_service(
        rate_limit_service,
        rate_limit_ca.as_deref(),
        rate_limit_cert.as_deref().zip(rate_limit_key.as_deref()),
    );
    fleet
        .and_then(|fleet| load(&config).map(|c| (c, fleet)))
        .and_then(|(c, fleet)| {
            fpgen::serve::serve(c, listen, threads, limits, fleet.as_ref()).map_err(|e| {
                match e.kind() {
                    // the configuration needs what the command line lacks
                    std::io::ErrorKind::InvalidInput => Failure::Refused(format!("serve: {e}")),
                    _ => Failure::Io(format!("serve on {listen}: {e}")),
                }
            })
        })
}

/// Where `fpgen serve` asks fleet budgets, its TLS files read.
fn fleet_service(
    url: Option<String>,
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Option<fpgen::serve::FleetService>, Failure> {
    let Some(url) = url else {
        return Ok(None);
    };
    let read = |option: &str, path: &Path| {
        std::fs::read(path)
            .map_err(|e| Failure::Io(format!("serve: {option} {}: {e}", path.display())))
    };
    let tls = match ca {
        None => None,
        Some(ca) => Some(fpgen::serve::FleetTls {
            ca_pem: read("--rate-limit-ca", ca)?,
            identity: match identity {
                Some((cert, key)) => Some((
                    read("--rate-limit-cert", cert)?,
                    read("--rate-limit-key", key)?,
                )),
                None => None,
            },
        }),
    };
    Ok(Some(fpgen::serve::FleetService { url, tls }))
}

/// `fpgen ratelimit`'s arguments.
#[derive(clap::Args)]
struct RatelimitArgs {
    /// gRPC address (ShouldRateLimit and grpc.health.v1.Health)
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// The Redis primary: redis://[user[:password]@]host[:port][/db], or rediss:// for TLS.
    /// A password here is visible to every local user (the process list): give the URL
    /// in FPGEN_REDIS_URL or the password in --redis-password-file
    #[arg(
        long,
        env = "FPGEN_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: String,
    /// A file whose first line is Redis's password (replaces the URL's)
    #[arg(long)]
    redis_password_file: Option<PathBuf>,
    /// PEM file of the authorities that sign Redis's certificate (rediss:// only;
    /// default: the system's roots)
    #[arg(long)]
    redis_ca: Option<PathBuf>,
    /// PEM certificate chain of the gRPC service (TLS; with --tls-key)
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the gRPC service (with --tls-cert)
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM file of the authorities whose client certificates the gRPC service accepts:
    /// mutual TLS, every other client refused (with --tls-cert)
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Serve descriptors with is_negative_hits (hits given back); fpgen's modules never
    /// send them, and any caller could empty a budget with them
    #[arg(long)]
    allow_negative_hits: bool,
    /// HTTP address of /stats (the service's counters) and /ready (Redis answers)
    #[arg(long, default_value = "127.0.0.1:8082")]
    admin: SocketAddr,
    /// Milliseconds one Redis call may take; then the request fails (UNAVAILABLE)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60000))]
    redis_timeout_ms: u64,
}

/// `fpgen ratelimit`: serves until the process ends. `on_command_line`:
/// `--redis` came from the command line (a password in it is visible).
fn ratelimit(args: RatelimitArgs, on_command_line: bool) -> Result<(), Failure> {
    let options = ratelimit_options(args)?;
    if on_command_line && options.redis.url_has_password {
        tracing::warn!(
            "the Redis password given in --redis is visible to every local user \
             (the process list): give the URL in FPGEN_REDIS_URL or the password \
             in --redis-password-file"
        );
    }
    fpgen::ratelimit::serve(options).map_err(|e| Failure::Io(format!("ratelimit: {e}")))
}

/// The service's options from its arguments: the files read, the Redis URL
/// checked (no message repeats it: it may hold the password).
fn ratelimit_options(args: RatelimitArgs) -> Result<fpgen::ratelimit::Options, Failure> {
    let read = |option: &str, path: &Path| {
        std::fs::read(path)
            .map_err(|e| Failure::Io(format!("ratelimit: {option} {}: {e}", path.display())))
    };
    let password = match &args.redis_password_file {
        Some(path) => {
            let bytes = read("--redis-password-file", path)?;
            let text = String::from_utf8(bytes).map_err(|_| {
                Failure::Io(format!(
                    "ratelimit: --redis-password-file {}: not UTF-8",
                    path.display()
                ))
            })?;
            Some(text.lines().next().unwrap_or("").to_owned())
        }
        None => None,
    };
    let ca = match &args.redis_ca {
        Some(path) => Some(read("--redis-ca", path)?),
        None => None,
    };
    let redis = fpgen::ratelimit::RedisTarget::new(&args.redis, password, ca)
        .map_err(|e| Failure::Io(format!("ratelimit: --redis: {e}")))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(fpgen::ratelimit::ServerTls {
            cert_pem: read("--tls-cert", cert)?,
            key_pem: read("--tls-key", key)?,
            client_ca_pem: match &args.tls_client_ca {
                Some(ca) => Some(read("--tls-client-ca", ca)?),
                None => None,
            },
        }),
        _ => None,
    };
    Ok(fpgen::ratelimit::Options {
        listen: args.listen,
        redis,
        admin: Some(args.admin),
        redis_timeout: std::time::Duration::from_millis(args.redis_timeout_ms),
        tls,
        bounds: fpgen::ratelimit::Bounds {
            negative_hits: args.allow_negative_hits,
            ..fpgen::ratelimit::Bounds::default()
        },
    })
}

fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(message)) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
        Err(Failure::Io(message)) => {
            eprintln!("fpgen: {message}");
            ExitCode::from(3)
        }
    }
}

fn random_hex(bytes: usize) -> Result<String, Failure> {
    let mut buf = vec![0u8; bytes];
    SystemHost
        .fill_random(&mut buf)
        .map_err(|e| Failure::Io(e.0.into()))?;
    Ok(hex::encode(buf))
}

fn keygen(id: Option<String>, hex_only: bool) -> Result<(), Failure> {
    if hex_only {
        println!("{}", random_hex(32)?);
        return Ok(());
    }
    let id = match id {
        Some(id) => id,
        None => {
            let date = fpgen::licence::rfc3339(SystemHost.now());
            format!(
                "k-{}-{}",
                date.get(..10).unwrap_or("").replace('-', ""),
                random_hex(2)?
            )
        }
    };
    let id = KeyId::parse(&id).map_err(|e| Failure::Refused(format!("fpgen: the key id: {e}")))?;
    println!(
        "{}",
        serde_json::json!({"id": id.as_str(), "key": random_hex(32)?})
    );
    Ok(())
}

fn authenticator(
    customer: Option<String>,
    digest: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let (authenticator, created) = match (customer, digest) {
        (Some(id), _) => {
            let id = CustomerId::parse(&id)
                .map_err(|e| Failure::Refused(format!("fpgen: the customer id: {e}")))?;
            (format!("{id},{}", random_hex(16)?), true)
        }
        (None, Some(text)) if text == "-" => {
            let mut line = String::new();
            std::io::stdin()
                .read_to_string(&mut line)
                .map_err(|e| Failure::Io(format!("standard input: {e}")))?;
            (line.trim_end_matches(['\r', '\n']).to_owned(), false)
        }
        (None, Some(text)) => (text, false),
        (None, None) => {
            return Err(Failure::Refused(
                "fpgen: give --customer or --digest".into(),
            ))
        }
    };
    let Some((id, secret)) = authenticator.split_once(',') else {
        return Err(Failure::Refused(
            "fpgen: an authenticator is <customerId>,<secret>".into(),
        ));
    };
    let sha = hex::encode(Sha256::digest(secret.as_bytes()));
    match (json, created) {
        (true, true) => println!(
            "{}",
            serde_json::json!({"customer": id, "authenticator": authenticator, "authenticator_sha256": sha})
        ),
        (true, false) => println!(
            "{}",
            serde_json::json!({"customer": id, "authenticator_sha256": sha})
        ),
        (false, true) => {
            println!("customer:             {id}");
            println!("authenticator:        {authenticator}    (hand this to the customer; it is not stored anywhere)");
            println!(
                "authenticator_sha256: {sha}    (put this in customers[].authenticator_sha256)"
            );
        }
        (false, false) => println!("{sha}"),
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Io(format!("{}: {e}", path.display())))
}

fn load(path: &Path) -> Result<Config, Failure> {
    Config::from_json(&read(path)?).map_err(|errors| {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| format!("{}: {}: {}", path.display(), e.field, e.problem))
            .collect();
        Failure::Refused(lines.join("\n"))
    })
}

/// The query: `--query` as it is, then each `name=value` argument with its
/// value form-encoded.
fn query_of(query: Option<String>, params: &[String]) -> String {
    let mut out = query.unwrap_or_default();
    let mut pairs = form_urlencoded::Serializer::new(String::new());
    for p in params {
        let (name, value) = p.split_once('=').unwrap_or((p.as_str(), ""));
        pairs.append_pair(name, value);
    }
    let pairs = pairs.finish();
    if !out.is_empty() && !pairs.is_empty() {
        out.push('&');
    }
    out.push_str(&pairs);
    out
}

fn mint(config: &Path, drm: &str, query: Option<String>, params: &[String]) -> Result<(), Failure> {
    let config = load(config)?;
    let drm = fpgen::licence::Drm::parse(drm)
        .ok_or_else(|| Failure::Refused(format!("unknown DRM {drm:?}")))?;
    let query = query_of(query, params);
    let minting = service::mint_url_for(&config, drm, &query, b"", &SystemHost);
    if minting.result.is_ok() && drm == fpgen::licence::Drm::PlayReady {
        println!("{}", minting.into_answer().response.body);
        return Ok(());
    }
    match minting.result {
        Ok(url) => {
            println!("{url}");
            Ok(())
        }
        Err(error) => Err(Failure::Refused(format!(
            "error {}: {}",
            error.code.code(),
            error.message()
        ))),
    }
}

fn inspect(
    config: &Path,
    show_content_key: bool,
    now: Option<i64>,
    show_refused: bool,
    text: &str,
) -> Result<(), Failure> {
    let config = load(config)?;
    // A licence URL is read with the gate's own parser: `&` or `;`
    // separators, any spelling of the name, exactly one token.
    // PlayReady's answer (`{"licenseAcquisitionUrl": …, "token": …}`) is
    // read for its token.
    let answer = serde_json::from_str::<serde_json::Value>(text).ok();
    let token_member = answer.as_ref().and_then(|a| a.get("token")?.as_str());
    let token = match (token_member, text.split_once('?')) {
        (Some(token), _) => token.to_owned(),
        (None, Some((_, query))) => fpgen::redeem::token_of(query)
            .map(std::borrow::Cow::into_owned)
            .ok_or_else(|| {
                Failure::Refused(
                    "invalid token (-4010): the URL has no ExpressPlayToken, or more than one"
                        .into(),
                )
            })?,
        (None, None) => text.trim().to_owned(),
    };
    let now = now.unwrap_or_else(|| SystemHost.now());
    let refused = |reason| Failure::Refused(format!("invalid token (-4010): {reason}"));
    let verified = UntrustedToken::parse(&token)
        .and_then(|t| t.verify(config.sealing_keys()))
        .map_err(refused)?;
    let problem = verified.check(config.environment(), now).err();
    let mut out = serde_json::json!({
        "key_id": verified.key_id().as_str(),
        "drm": verified.licence().drm().as_str(),
        "licence": verified.licence().to_json(show_content_key),
    });
    if let (Some(reason), Some(map)) = (problem, out.as_object_mut()) {
        if !show_refused {
            return Err(refused(reason));
        }
        map.insert("refused".into(), reason.to_string().into());
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    problem.map_or(Ok(()), |reason| Err(refused(reason)))
}

fn check_config(file: &Path) -> Result<(), Failure> {
    let config = load(file)?;
    println!("{}: valid: {}", file.display(), config.summary());
    for warning in config.warnings() {
        eprintln!("{}: warning: {warning}", file.display());
    }
    Ok(())
}
