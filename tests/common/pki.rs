//! Certificates made for one test: an authority, a server certificate for
//! `localhost` and 127.0.0.1 (Redis over TLS, `fpgen ratelimit`'s TLS), a
//! client certificate (Envoy's, for mutual TLS), and a client certificate
//! of another authority, which the service must refuse.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

pub struct Pki {
    dir: PathBuf,
}

fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn write_leaf(dir: &Path, name: &str, names: &[&str], issuer: &CertifiedIssuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

impl Pki {
    pub fn new() -> Pki {
        let dir = super::new_workdir().join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = authority("fpgen test CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        write_leaf(&dir, "server", &["localhost", "127.0.0.1"], &ca);
        write_leaf(&dir, "client", &["envoy.fpgen.test"], &ca);
        let other = authority("another CA");
        write_leaf(&dir, "stranger", &["stranger.test"], &other);
        Pki { dir }
    }

    /// `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`,
    /// `stranger.pem`, `stranger.key`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap()
    }
}
