//! TLS to every service, against the machine's real servers: PostgreSQL (its own
//! certificate, `sslmode=verify-full`), and a Redis and a NATS server each started here on
//! a free port with a certificate authority and certificates this test makes (Redis also
//! requires a client certificate).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use wrapup::App;
use wrapup::config;

use crate::helpers::*;

/// A certificate authority, a server certificate for `localhost`/`127.0.0.1` and a client
/// certificate, all signed by it, as PEM files in a directory of their own.
pub struct TestPki {
    pub dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "wrapup test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca_cert.pem());
        for (name, purpose) in [
            ("server", ExtendedKeyUsagePurpose::ServerAuth),
            ("client", ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, format!("wrapup test {name}"));
            params.extended_key_usages = vec![purpose];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        TestPki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A port for a server a test starts: below the kernel's ephemeral range (which the
/// tests' own `:0` listeners draw from, and could take in between), free when checked,
/// and never handed out twice in this process.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// A server process this test started; killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(program: &str, args: &[&str], port: u16) -> Server {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} starts: {e}"));
    let server = Server(child);
    wait_for_port(port, program);
    server
}

fn pg_tls_url(query: &str) -> String {
    // The machine's PostgreSQL serves TLS with Debian's certificate for `localhost`.
    format!("postgres://postgres@localhost:5432/test?{query}")
}

fn settings_for(store: &str, tail: &str, dir: &Path) -> config::Settings {
    let text = config_for_store(store, "", tail);
    write_config(dir, &text);
    let file = config::parse(&text).unwrap();
    config::validate(&file, dir, |k| {
        (k == ADMIN_TOKEN_ENV).then(|| ADMIN_TOKEN.to_owned())
    })
    .unwrap()
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_and_every_connection_is_encrypted() {
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let run = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("wrapup-tls-{}", &run[..12]);
    let schema = format!("wrapup_tls_{run}");
    let url = pg_tls_url(&format!(
        "sslmode=verify-full&sslrootcert={snakeoil}&application_name={name}"
    ));
    let store = format!("url = \"{url}\"\nschema = \"{schema}\"\npool_size = 4");
    let app = TestApp::build()
        .config(&config_for_store(&store, "", ""))
        .spawn()
        .await;
    let c = unique("tls");
    let (status, _) = app.end(&c).await;
    assert_eq!(status, 200);
    let (status, record) = app.conversation(&c).await;
    assert_eq!(status, 200);
    assert_eq!(record["status"], "ended");

    // Seen from the server: every connection of this instance is TLS.
    let direct = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    let rows: Vec<(Option<bool>,)> = sqlx::query_as(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
    )
    .bind(&name)
    .fetch_all(&direct)
    .await
    .unwrap();
    assert!(!rows.is_empty(), "the instance's connections are listed");
    assert!(rows.iter().all(|(ssl,)| *ssl == Some(true)), "{rows:?}");
    app.stop().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&direct)
        .await
        .unwrap();

    // The certificate is checked: Debian's names `localhost` only, so at 127.0.0.1 the
    // server is refused at start, with the address and the reason.
    let dir = tempfile::tempdir().unwrap();
    let wrong = format!(
        "postgres://postgres@127.0.0.1:5432/test?sslmode=verify-full&sslrootcert={snakeoil}"
    );
    let settings = settings_for(&format!("url = \"{wrong}\""), "", dir.path());
    let error = match App::build(settings).await {
        Ok(_) => panic!("a server certificate from another CA is refused"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("127.0.0.1:5432"), "{error}");
    assert!(
        error.to_lowercase().contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
}

#[tokio::test]
async fn redis_cleanup_over_tls_with_a_client_certificate() {
    let pki = TestPki::new();
    let port = free_port();
    let p = |n: &str| pki.path(n).display().to_string();
    let _redis = spawn_server(
        "redis-server",
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-cert-file",
            &p("server.pem"),
            "--tls-key-file",
            &p("server-key.pem"),
            "--tls-ca-cert-file",
            &p("ca.pem"),
            "--tls-auth-clients",
            "yes",
        ],
        port,
    );
    let url = format!("rediss://127.0.0.1:{port}");
    let client = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: std::fs::read(pki.path("client.pem")).unwrap(),
                client_key: std::fs::read(pki.path("client-key.pem")).unwrap(),
            }),
            root_cert: Some(std::fs::read(pki.path("ca.pem")).unwrap()),
        },
    )
    .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let c = unique("tlsredis");
    let key = format!("state:{BOT}:{c}");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();

    let action = |tls: &str| {
        format!(
            "[[bots.on_end]]\nkind = \"redis_cleanup\"\nurl = \"{url}\"\nkeys = [\"state:{{botId}}:{{conversationId}}\"]\ntls = {{ {tls} }}\n[bots.on_end.retry]\nmax_attempts = 1\n"
        )
    };
    let with_cert = action(&format!(
        "ca_file = \"{}\", client_cert = \"{}\", client_key = \"{}\"",
        p("ca.pem"),
        p("client.pem"),
        p("client-key.pem")
    ));
    let app = TestApp::build().actions(&with_cert).spawn().await;
    app.end(&c).await;
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:#?}");
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "{key} was deleted over TLS");
    app.stop().await;

    // Without the client certificate the server refuses the connection: the job fails
    // with the reason, and is not counted as done.
    let app = TestApp::build()
        .actions(&action(&format!("ca_file = \"{}\"", p("ca.pem"))))
        .spawn()
        .await;
    let c2 = unique("tlsredis");
    app.end(&c2).await;
    let jobs = app.settled_jobs(&c2, 1).await;
    assert_eq!(jobs[0]["state"], "dead", "{jobs:#?}");
    let error = attempt_error(&app, &jobs[0]).await;
    assert!(error.contains("Redis"), "{error}");
    app.stop().await;
}

#[tokio::test]
async fn nats_over_tls_trusts_the_configured_authority() {
    let pki = TestPki::new();
    let port = free_port();
    let store_dir = tempfile::tempdir().unwrap();
    let p = |n: &str| pki.path(n).display().to_string();
    let _nats = spawn_server(
        "nats-server",
        &[
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            store_dir.path().to_str().unwrap(),
            "--tls",
            "--tlscert",
            &p("server.pem"),
            "--tlskey",
            &p("server-key.pem"),
        ],
        port,
    );
    let url = format!("tls://127.0.0.1:{port}");
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(pki.path("ca.pem"))
        .connect(url.as_str())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: format!("TLS_{run}"),
            subjects: vec![format!("tls.{run}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    let tail = format!(
        "[[bots.on_end]]\nkind = \"nats\"\nurl = \"{url}\"\nsubject = \"tls.{run}.ended\"\ntls = {{ ca_file = \"{}\" }}\n",
        p("ca.pem")
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let c = unique("tlsnats");
    app.end(&c).await;
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:#?}");
    let mut stream = stream;
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    app.stop().await;
}

#[test]
fn tls_files_are_checked_at_load_and_named() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let check = |tls: &str, url: &str| -> String {
        let tail = format!(
            "[[bots.on_end]]\nkind = \"redis_cleanup\"\nurl = \"{url}\"\nkeys = [\"k:{{conversationId}}\"]\ntls = {{ {tls} }}\n"
        );
        let text = config_with_actions(&dir.path().join("w.db"), "", &tail);
        write_config(dir.path(), &text);
        let file = config::parse(&text).unwrap();
        match config::validate(&file, dir.path(), |k| {
            (k == ADMIN_TOKEN_ENV).then(|| ADMIN_TOKEN.to_owned())
        }) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    let ca = pki.path("ca.pem").display().to_string();
    let key = pki.path("client-key.pem").display().to_string();
    assert_eq!(check(&format!("ca_file = \"{ca}\""), "rediss://h:1"), "");
    let e = check(&format!("ca_file = \"{key}\""), "rediss://h:1");
    assert!(
        e.contains("tls.ca_file") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = check("ca_file = \"/nonexistent.pem\"", "rediss://h:1");
    assert!(
        e.contains("tls.ca_file") && e.contains("cannot read"),
        "{e}"
    );
    let e = check(&format!("client_cert = \"{ca}\""), "rediss://h:1");
    assert!(e.contains("tls.client_key") && e.contains("needed"), "{e}");
    let e = check(
        &format!("client_cert = \"{ca}\", client_key = \"{ca}\""),
        "rediss://h:1",
    );
    assert!(
        e.contains("tls.client_key") && e.contains("private key"),
        "{e}"
    );
    let e = check(&format!("ca_file = \"{ca}\""), "redis://h:1");
    assert!(e.contains(".tls") && e.contains("rediss://"), "{e}");
}

async fn attempt_error(app: &TestApp, job: &Value) -> String {
    let id = job["id"].as_str().unwrap();
    let (_, detail) = app
        .admin(reqwest::Method::GET, &format!("/jobs/{id}"))
        .await;
    detail["lastError"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn https_listener_with_the_operator_routes_on_a_listener_of_their_own() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = format!(
        "admin_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        pki.path("server.pem").display(),
        pki.path("server-key.pem").display()
    );
    let text = config_with_actions(&dir.path().join("w.db"), &server, "");
    write_config(dir.path(), &text);
    let file = config::parse(&text).unwrap();
    let settings = config::validate(&file, dir.path(), |k| {
        (k == ADMIN_TOKEN_ENV).then(|| ADMIN_TOKEN.to_owned())
    })
    .unwrap();
    let app = App::build(settings).await.unwrap();
    let public = format!("https://localhost:{}", app.local_addr().port());
    let operator = format!("https://localhost:{}", app.admin_addr().unwrap().port());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // The hooks and records APIs over HTTPS on the public port.
    let c = unique("https");
    let resp = https
        .post(format!("{public}/agentai/api/v1/hooks/{BOT}"))
        .header("token", token())
        .json(&seed_with(&c))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = https
        .get(format!("{public}/api/v1/bots/{BOT}/conversations/{c}"))
        .header("auth", token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Plain HTTP to a TLS port gets no answer.
    let plain = client()
        .get(format!(
            "http://127.0.0.1:{}/healthz",
            app.local_addr().port()
        ))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    // The operator's routes are not on the public port…
    for path in ["/admin/v1/jobs", "/metrics", "/console", "/console/login"] {
        let resp = https
            .get(format!("{public}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path} on the public port");
    }
    // …but on their own, also over TLS; the hooks are not there.
    for path in ["/admin/v1/jobs", "/metrics", "/console/login", "/healthz"] {
        let resp = https
            .get(format!("{operator}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path} on the operator port");
    }
    let resp = https
        .post(format!("{operator}/agentai/api/v1/hooks/{BOT}"))
        .header("token", token())
        .json(&seed_with(&unique("https")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // The operator's routes refused on the public port are counted and carry a request id.
    let resp = https
        .get(format!("{public}/admin/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["x-request-id"].len(), 32);
    // The console's cookie is Secure when the listener is TLS.
    let resp = https
        .post(format!("{operator}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("Secure"), "{cookie}");

    // A renewed certificate (here from another authority, to tell them apart) is swapped
    // in by a reload: new connections get it, on both listeners.
    let other = TestPki::new();
    let with = |text: &str| {
        let file = config::parse(text).unwrap();
        config::validate(&file, dir.path(), |k| {
            (k == ADMIN_TOKEN_ENV).then(|| ADMIN_TOKEN.to_owned())
        })
    };
    let rotated = text
        .replace(
            &pki.path("server.pem").display().to_string(),
            &other.path("server.pem").display().to_string(),
        )
        .replace(
            &pki.path("server-key.pem").display().to_string(),
            &other.path("server-key.pem").display().to_string(),
        );
    app.reload(&with(&rotated).unwrap()).unwrap();
    let trusting = |pki: &TestPki| {
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    for base in [&public, &operator] {
        let resp = trusting(&other)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{base}");
        let old = trusting(&pki).get(format!("{base}/healthz")).send().await;
        assert!(old.is_err(), "{base}: the old certificate is still served");
    }
    // The same files rewritten in place are read again too.
    for name in ["server.pem", "server-key.pem"] {
        std::fs::copy(pki.path(name), other.path(name)).unwrap();
    }
    app.reload(&with(&rotated).unwrap()).unwrap();
    let resp = trusting(&pki)
        .get(format!("{public}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A certificate with a key that is not its own never loads, so no reload takes it.
    let third = TestPki::new();
    let mismatched = rotated.replace(
        &other.path("server.pem").display().to_string(),
        &third.path("server.pem").display().to_string(),
    );
    let e = with(&mismatched).err().unwrap().to_string();
    assert!(
        e.contains("server.tls_key") && e.contains("does not go with server.tls_cert"),
        "{e}"
    );
    // Turning TLS off is refused (the listeners would change protocol), naming the key.
    let plain = text
        .lines()
        .filter(|l| !l.starts_with("tls_"))
        .collect::<Vec<_>>()
        .join("\n");
    let refused = app.reload(&with(&plain).unwrap()).unwrap_err().to_string();
    assert!(refused.contains("server.tls_cert"), "{refused}");
    app.stop().await;
}

#[test]
fn two_instances_share_one_file_with_their_listeners_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let server = format!("health_listen = \"127.0.0.1:{p1}\"\nadmin_listen = \"127.0.0.1:{p2}\"");
    let config = write_config(
        dir.path(),
        &config_text(&dir.path().join("w.db"), &server).replace(
            &format!("url = \"sqlite://{}\"", dir.path().join("w.db").display()),
            &format!(
                "url = \"postgres://postgres@127.0.0.1:5432/test\"\nschema = \"wrapup_envlisten_{}\"",
                uuid::Uuid::new_v4().simple()
            ),
        ),
    );
    let (_first, a, _) = crate::crash::serve_env(&config, &[]);
    assert_eq!(a["health_listen"], format!("127.0.0.1:{p1}"));
    assert_eq!(a["admin_listen"], format!("127.0.0.1:{p2}"));
    let (_second, b, _) = crate::crash::serve_env(
        &config,
        &[
            ("WRAPUP_HEALTH_LISTEN", &format!("127.0.0.1:{p3}")),
            ("WRAPUP_ADMIN_LISTEN", ""),
        ],
    );
    assert_eq!(b["health_listen"], format!("127.0.0.1:{p3}"));
    assert_eq!(b["admin_listen"], "off");
    assert_eq!(b["store"], "postgres");
    assert_eq!(b["version"], env!("CARGO_PKG_VERSION"));
    assert_ne!(a["listen"], b["listen"]);
}

/// An HTTPS receiver that requires a client certificate signed by `pki`'s authority;
/// counts the requests it answered 200.
async fn mutual_tls_receiver(
    pki: &TestPki,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem = |name: &str| std::fs::read(pki.path(name)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem("ca.pem").as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = rustls_pemfile::certs(&mut pem("server.pem").as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut pem("server-key.pem").as_slice())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}/hook",
        listener.local_addr().unwrap().port()
    );
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| {
                    count.fetch_add(1, Ordering::SeqCst);
                    async { Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new())) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (url, answered)
}

#[tokio::test]
async fn a_webhook_over_https_trusts_its_authority_and_presents_its_client_certificate() {
    let pki = TestPki::new();
    let (url, answered) = mutual_tls_receiver(&pki).await;
    let p = |n: &str| pki.path(n).display().to_string();
    let action = |tls: &str| {
        format!(
            "[[bots.on_end]]\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\ntls = {{ {tls} }}\nretry = {{ max_attempts = 1 }}\n"
        )
    };
    let app = TestApp::build()
        .actions(&action(&format!(
            "ca_file = \"{}\", client_cert = \"{}\", client_key = \"{}\"",
            p("ca.pem"),
            p("client.pem"),
            p("client-key.pem")
        )))
        .spawn()
        .await;
    let c = unique("mtls");
    app.end(&c).await;
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:#?}");
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 1);
    app.stop().await;

    // Without the client certificate the receiver refuses the handshake: dead, with why.
    let app = TestApp::build()
        .actions(&action(&format!("ca_file = \"{}\"", p("ca.pem"))))
        .spawn()
        .await;
    let c = unique("mtls");
    app.end(&c).await;
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "dead", "{jobs:#?}");
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 1);
    app.stop().await;
}

/// A server that speaks PostgreSQL's TLS opening (SSLRequest, `S`, a handshake with this
/// certificate) and nothing more; its port, and how many handshakes completed.
async fn tls_opening_only(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    wrapup::install_tls_provider();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if stream.read_exact(&mut request).await.is_ok()
                    && stream.write_all(b"S").await.is_ok()
                    && acceptor.accept(stream).await.is_ok()
                {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    (port, handshakes)
}

/// Starting on a PostgreSQL at `host:port` with `sslrootcert`: the error.
async fn start_error(host: &str, port: u16, ca: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://postgres@{host}:{port}/test?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    let settings = settings_for(
        &format!("url = \"{url}\"\nconnect_timeout = \"5s\""),
        "",
        dir.path(),
    );
    match App::build(settings).await {
        Ok(_) => panic!("the server speaks no PostgreSQL after TLS"),
        Err(e) => format!("{e:#}"),
    }
}

/// Issue 25, item 10: a PostgreSQL whose certificate is a self-signed CA used as its own
/// (what many guides make, and libpq takes) is refused by rustls with
/// `CaUsedAsEndEntity`; the error says what that means and what to do.
#[tokio::test]
async fn a_postgres_certificate_that_is_its_own_ca_is_refused_with_what_to_do() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("db.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let (port, _) = tls_opening_only(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .await;
    let error = start_error("127.0.0.1", port, &ca).await;
    assert!(error.contains("CaUsedAsEndEntity"), "{error}");
    assert!(
        error.contains("make a CA and a server certificate signed by it")
            && error.contains("docs/tls.md"),
        "{error}"
    );
}

/// docs/tls.md's commands, run as written (for `localhost`): their server certificate,
/// presented by a PostgreSQL TLS opening, verifies against their CA (the start then fails
/// past TLS: this server speaks no PostgreSQL).
#[tokio::test]
async fn the_documented_ca_and_server_certificate_pass_verification() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tls.md")).unwrap();
    let from = doc
        .find("Make a CA and a\nserver certificate signed by it")
        .expect("the section");
    let block = doc[from..]
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("its shell block")
        .replace("db.example.com", "localhost");
    let dir = tempfile::tempdir().unwrap();
    let ran = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(ran.status.success(), "{ran:?}");
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    let chain: Vec<_> = rustls_pemfile::certs(&mut &read("server.crt")[..])
        .map(Result::unwrap)
        .collect();
    let key = rustls_pemfile::private_key(&mut &read("server.key")[..])
        .unwrap()
        .unwrap();
    let (port, handshakes) = tls_opening_only(chain, key).await;
    let error = start_error("localhost", port, &dir.path().join("db-ca.pem")).await;
    assert!(
        handshakes.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "no TLS handshake completed: {error}"
    );
    assert!(
        !error.to_lowercase().contains("certificate") && !error.contains("CaUsedAsEndEntity"),
        "{error}"
    );
    assert!(
        error.contains("cannot connect to PostgreSQL at localhost"),
        "{error}"
    );
}
