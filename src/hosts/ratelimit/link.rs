//! The service's link to Redis: where it is (a URL that may hold a
//! password, which is never printed), and one multiplexed connection kept
//! up by a supervisor task.
//!
//! The service serves from its first moment: until Redis answers, calls get
//! UNAVAILABLE, gRPC health says NOT_SERVING and `/ready` 503, each with
//! the reason (unreachable, refused, authentication failed), which is also
//! logged once per change. The supervisor tries again every
//! [`RETRY_MAX`] at most, so the service answers within about a second of
//! Redis being back (redis-rs's own reconnecting manager waited up to a
//! minute between attempts). A connection is checked with `PING` every
//! [`HEARTBEAT`], and at once when a call on it fails.

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

/// The longest pause between two attempts to reach Redis.
pub const RETRY_MAX: Duration = Duration::from_millis(500);
/// How often a connection that nothing uses is checked.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Where Redis is and how to reach it. Its URL may carry a password: the
/// type prints only [`RedisTarget::redacted`], in `Debug` too.
#[derive(Clone)]
pub struct RedisTarget {
    info: redis::ConnectionInfo,
    /// A PEM bundle of the authorities that sign the server's certificate
    /// (`rediss://` only); the system's roots otherwise.
    ca: Option<Vec<u8>>,
    shown: String,
    /// Whether the URL itself held a password (not only `password`).
    pub url_has_password: bool,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RedisTarget").field(&self.shown).finish()
    }
}

impl RedisTarget {
    /// Reads `url` (`redis://[user[:password]@]host[:port][/db]` or
    /// `rediss://…` for TLS); `password`, when given, replaces the URL's.
    /// No error message repeats the URL: it may hold the password.
    pub fn new(url: &str, password: Option<String>, ca: Option<Vec<u8>>) -> Result<Self, String> {
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss")) {
            return Err("not a redis:// or rediss:// URL".into());
        }
        let mut info = url
            .into_connection_info()
            .map_err(|e| format!("not a Redis URL ({:?})", e.kind()))?;
        let url_has_password = info.redis.password.is_some();
        if let Some(password) = password {
            info.redis.password = Some(password);
        }
        let tls = matches!(info.addr, ConnectionAddr::TcpTls { .. });
        if ca.is_some() && !tls {
            return Err("a CA for Redis needs a rediss:// URL".into());
        }
        // A user name alone is masked too: `redis://secret@host`, the
        // password without its `:`, is read as a user name.
        let user = match (&info.redis.username, &info.redis.password) {
            (Some(user), Some(_)) => format!("{user}:***@"),
            (Some(_), None) => "***@".to_owned(),
            (None, Some(_)) => ":***@".to_owned(),
            (None, None) => String::new(),
        };
        let shown = format!(
            "{}://{user}{}/{}",
            if tls { "rediss" } else { "redis" },
            info.addr,
            info.redis.db
        );
        Ok(RedisTarget {
            info,
            ca,
            shown,
            url_has_password,
        })
    }

    /// The URL with its password replaced by `***`: what logs may show.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.ca {
            Some(ca) => redis::Client::build_with_tls(
                self.info.clone(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
            None => redis::Client::open(self.info.clone()),
        }
    }
}

/// Whether a call's error means the connection must be made again though
/// it still answers: the server is a replica now (`READONLY`, after a
/// failover) or says it cannot serve (`MASTERDOWN`), or the error is one
/// redis-rs says no retry on this connection mends.
pub fn needs_reconnect(e: &redis::RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::ReadOnly | redis::ErrorKind::MasterDown
    ) || e.is_unrecoverable_error()
}

/// Why Redis cannot be used, in words for a log line, `/ready` and an
/// UNAVAILABLE status (never the URL).
pub fn why(e: &redis::RedisError) -> String {
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        format!("authentication failed (wrong or missing password): {text}")
    } else if e.is_connection_refusal() {
        format!("connection refused: {text}")
    } else if e.is_timeout() {
        "no answer in time".to_owned()
    } else {
        text
    }
}

/// The connection of the moment, shared by every call.
pub struct Link {
    connection: RwLock<Result<MultiplexedConnection, String>>,
    suspect: Notify,
    /// Set with a reason when the connection must be dropped even though
    /// it answers `PING` (a primary demoted to a replica: `READONLY`).
    drop_reason: std::sync::Mutex<Option<String>>,
}

impl Link {
    fn new() -> Arc<Link> {
        Arc::new(Link {
            connection: RwLock::new(Err("not connected yet".into())),
            suspect: Notify::new(),
            drop_reason: std::sync::Mutex::new(None),
        })
    }

    /// The connection, or why there is none.
    pub fn connection(&self) -> Result<MultiplexedConnection, String> {
        self.connection
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A call on the connection failed: have it checked now.
    pub fn suspect(&self) {
        self.suspect.notify_one();
    }

    /// A call failed in a way a `PING` does not show (the server is no
    /// longer a primary that can write): reconnect, whatever `PING` says.
    pub fn reconnect(&self, why: String) {
        *self
            .drop_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
        self.suspect.notify_one();
    }

    fn take_drop_reason(&self) -> Option<String> {
        self.drop_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn set(&self, state: Result<MultiplexedConnection, String>) {
        *self
            .connection
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }
}

/// What the supervisor tells the rest of the service (gRPC health):
/// whether Redis can be used. (Why not is in the link and the log.)
pub trait Watcher: Send + 'static {
    fn serving(&mut self, up: bool) -> impl std::future::Future<Output = ()> + Send;
}

/// Starts the supervisor; the link answers "not connected yet" until Redis
/// first answers.
pub fn start(target: &RedisTarget, timeout: Duration, watcher: impl Watcher) -> Arc<Link> {
    let link = Link::new();
    let client = target.client();
    let shown = target.redacted().to_owned();
    tokio::spawn(supervise(
        Arc::clone(&link),
        client,
        shown,
        timeout,
        watcher,
    ));
    link
}

/// `PING` within `timeout`: `Ok`, or why not.
pub async fn ping(connection: &mut MultiplexedConnection, timeout: Duration) -> Result<(), String> {
    let command = redis::cmd("PING");
    match tokio::time::timeout(timeout, command.query_async::<String>(connection)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(why(&e)),
        Err(_) => Err("no answer in time".into()),
    }
}

async fn connect(
    client: &redis::Client,
    timeout: Duration,
) -> Result<MultiplexedConnection, String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    let attempt = client.get_multiplexed_async_connection_with_config(&config);
    let mut connection = match tokio::time::timeout(timeout * 2, attempt).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => return Err(why(&e)),
        Err(_) => return Err("no answer in time".into()),
    };
    // A server that wants a password accepts the connection and refuses
    // the first command: ask one.
    ping(&mut connection, timeout).await?;
    Ok(connection)
}

async fn supervise(
    link: Arc<Link>,
    client: redis::RedisResult<redis::Client>,
    shown: String,
    timeout: Duration,
    mut watcher: impl Watcher,
) {
    let client = match client {
        Ok(client) => client,
        Err(e) => {
            // A TLS setting Redis's client refuses (a CA that is not PEM):
            // nothing will change it but a restart with another setting.
            let reason = format!("cannot use Redis at {shown}: {}", why(&e));
            tracing::error!("{reason}");
            link.set(Err(reason.clone()));
            watcher.serving(false).await;
            return;
        }
    };
    let mut last_reason = String::new();
    let mut pause = Duration::from_millis(50);
    loop {
        match connect(&client, timeout).await {
            Ok(mut connection) => {
                tracing::info!("redis: connected to {shown}");
                // a reconnect asked of the connection before is done
                let _ = link.take_drop_reason();
                link.set(Ok(connection.clone()));
                watcher.serving(true).await;
                last_reason.clear();
                pause = Duration::from_millis(50);
                let reason = loop {
                    tokio::select! {
                        () = link.suspect.notified() => {}
                        () = tokio::time::sleep(HEARTBEAT) => {}
                    }
                    if let Some(reason) = link.take_drop_reason() {
                        break reason;
                    }
                    if let Err(reason) = ping(&mut connection, timeout).await {
                        break reason;
                    }
                };
                tracing::warn!("redis: connection to {shown} lost ({reason}); reconnecting");
                link.set(Err(reason.clone()));
                watcher.serving(false).await;
                last_reason = reason;
            }
            Err(reason) => {
                // One line per new reason: a Redis down for an hour logs once.
                if reason != last_reason {
                    tracing::warn!(
                        "redis: cannot reach {shown} ({reason}); trying again every {} ms \
                         until it answers",
                        RETRY_MAX.as_millis()
                    );
                    link.set(Err(reason.clone()));
                    watcher.serving(false).await;
                    last_reason = reason;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let target = RedisTarget::new("redis://:s3cr3t-pw@127.0.0.1:6380/2", None, None).unwrap();
        assert_eq!(target.redacted(), "redis://:***@127.0.0.1:6380/2");
        assert!(!format!("{target:?}").contains("s3cr3t"));
        let user = RedisTarget::new("rediss://fpgen:pw-9@redis.example:6379", None, None).unwrap();
        assert_eq!(user.redacted(), "rediss://fpgen:***@redis.example:6379/0");
        let from_file =
            RedisTarget::new("redis://127.0.0.1:6379", Some("pw-7".into()), None).unwrap();
        assert_eq!(from_file.redacted(), "redis://:***@127.0.0.1:6379/0");
        assert_eq!(from_file.info.redis.password.as_deref(), Some("pw-7"));
        assert!(!from_file.url_has_password && target.url_has_password);
        let lone = RedisTarget::new("redis://pw-no-colon@127.0.0.1:6379", None, None).unwrap();
        assert_eq!(lone.redacted(), "redis://***@127.0.0.1:6379/0");
    }

    #[test]
    fn refusals_do_not_repeat_the_url() {
        for (url, ca) in [
            ("http://:pw-1@host", None),
            ("redis://:pw-1@host:notaport", None),
            ("redis://:pw-1@host", Some(b"pem".to_vec())),
        ] {
            let e = RedisTarget::new(url, None, ca).unwrap_err();
            assert!(!e.contains("pw-1"), "{e}");
        }
    }
}
