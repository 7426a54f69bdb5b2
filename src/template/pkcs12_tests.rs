//! The PKCS#12 functions against files the real `openssl` CLI makes (modern PBES2/AES and
//! legacy 3DES and RC2), with the outputs ESO's `pkcs12_test.go` expects: the key as
//! `openssl pkcs8 -topk8 -nocrypt` prints it, the certificates ordered leaf → intermediate →
//! root, the file order when the certificates are disjunct; and files we write read back by
//! `openssl pkcs12`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use base64::Engine as _;

use super::*;
use crate::{providers::SecretValue, template::Renderer};

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

fn text(dir: &Path, name: &str) -> String {
    String::from_utf8(read(dir, name)).unwrap()
}

/// A root CA (Ed25519, as ESO's fixtures), an intermediate (P-256) and an RSA leaf, with key
/// identifiers, and the PKCS#12 files made of them; made once per test run.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The directory lives as long as the test process; those of finished runs go here.
        for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("secret-relay-pkcs12-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = std::env::temp_dir().join(format!("secret-relay-pkcs12-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.as_path();
        std::fs::write(
            d.join("ca.ext"),
            "basicConstraints=critical,CA:TRUE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        )
        .unwrap();
        std::fs::write(
            d.join("leaf.ext"),
            "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        )
        .unwrap();
        for (name, alg) in [("root", "ED25519"), ("other-root", "ED25519")] {
            openssl(d, &["genpkey", "-algorithm", alg, "-out", &format!("{name}.key")]);
            openssl(d, &["req", "-x509", "-new", "-key", &format!("{name}.key"), "-subj", &format!("/CN={name}"), "-days", "2", "-out", &format!("{name}.crt")]);
        }
        openssl(d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "inter.key"]);
        openssl(d, &["req", "-new", "-key", "inter.key", "-subj", "/CN=intermediate", "-out", "inter.csr"]);
        openssl(d, &["x509", "-req", "-in", "inter.csr", "-CA", "root.crt", "-CAkey", "root.key", "-CAcreateserial", "-days", "2", "-extfile", "ca.ext", "-out", "inter.crt"]);
        openssl(d, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "leaf.key"]);
        openssl(d, &["req", "-new", "-key", "leaf.key", "-subj", "/CN=foo", "-out", "leaf.csr"]);
        openssl(d, &["x509", "-req", "-in", "leaf.csr", "-CA", "inter.crt", "-CAkey", "inter.key", "-CAcreateserial", "-days", "2", "-extfile", "leaf.ext", "-out", "leaf.crt"]);
        // Deliberately in the wrong order, as ESO's fixtures.
        let chain = [text(d, "leaf.crt"), text(d, "root.crt"), text(d, "inter.crt")].concat();
        std::fs::write(d.join("chain.pem"), chain).unwrap();
        let cas = [text(d, "root.crt"), text(d, "inter.crt")].concat();
        std::fs::write(d.join("cas.pem"), cas).unwrap();
        let disjunct = [text(d, "root.crt"), text(d, "inter.crt"), text(d, "other-root.crt")].concat();
        std::fs::write(d.join("disjunct.pem"), disjunct).unwrap();
        // OpenSSL 3's default: PBES2, PBKDF2-HMAC-SHA-256, AES-256-CBC, HMAC-SHA-256.
        openssl(d, &["pkcs12", "-export", "-in", "chain.pem", "-inkey", "leaf.key", "-out", "nopass.p12", "-passout", "pass:"]);
        openssl(d, &["pkcs12", "-export", "-in", "chain.pem", "-inkey", "leaf.key", "-out", "pass-1234.p12", "-passout", "pass:1234"]);
        openssl(d, &["pkcs12", "-export", "-in", "leaf.crt", "-certfile", "cas.pem", "-inkey", "leaf.key", "-out", "multibag.p12", "-passout", "pass:"]);
        openssl(d, &["pkcs12", "-export", "-in", "leaf.crt", "-certfile", "disjunct.pem", "-inkey", "leaf.key", "-out", "disjunct.p12", "-passout", "pass:"]);
        // Legacy: 3DES everywhere and a SHA-1 MAC, as OpenSSL 1.1 writes.
        openssl(d, &["pkcs12", "-export", "-in", "chain.pem", "-inkey", "leaf.key", "-out", "legacy-3des.p12", "-passout", "pass:1234", "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1"]);
        // RC2-40 needs OpenSSL's legacy provider; made when it is there.
        let made = Command::new("openssl")
            .args(["pkcs12", "-export", "-legacy", "-in", "chain.pem", "-inkey", "leaf.key", "-out", "legacy-rc2.p12", "-passout", "pass:1234"])
            .current_dir(d)
            .output()
            .is_ok_and(|o| o.status.success());
        if !made {
            let _ = std::fs::remove_file(d.join("legacy-rc2.p12"));
        }
        // Too much work asked: 2 × 300,000 iterations and the MAC's.
        openssl(d, &["pkcs12", "-export", "-in", "chain.pem", "-inkey", "leaf.key", "-out", "costly.p12", "-passout", "pass:", "-iter", "300000"]);
        std::fs::write(d.join("leaf.pk8"), openssl(d, &["pkcs8", "-topk8", "-nocrypt", "-in", "leaf.key"])).unwrap();
        std::fs::write(d.join("leaf.rsa"), openssl(d, &["rsa", "-in", "leaf.key", "-traditional"])).unwrap();
        dir
    })
}

fn normalized(pem_text: &str) -> String {
    pem::parse_many(pem_text)
        .unwrap()
        .iter()
        .map(|p| pem::encode(p).replace("\r\n", "\n"))
        .collect()
}

#[test]
fn key_and_ordered_chain_from_openssl_files() {
    let d = fixtures();
    let want_key = normalized(&text(d, "leaf.pk8"));
    let want_chain = normalized(
        &[
            text(d, "leaf.crt"),
            text(d, "inter.crt"),
            text(d, "root.crt"),
        ]
        .concat(),
    );
    let mut files = vec![
        ("nopass.p12", ""),
        ("pass-1234.p12", "1234"),
        ("multibag.p12", ""),
        ("legacy-3des.p12", "1234"),
    ];
    if d.join("legacy-rc2.p12").exists() {
        files.push(("legacy-rc2.p12", "1234"));
    } else {
        eprintln!("openssl has no legacy provider here: the RC2-40 file was not made");
    }
    for (file, pass) in files {
        let p12 = read(d, file);
        assert_eq!(key_pem(&p12, pass).unwrap(), want_key, "{file}");
        assert_eq!(cert_pem(&p12, pass).unwrap(), want_chain, "{file}");
    }
    // Disjunct certificates: no single chain, so the file's order (leaf first), as ESO.
    let disjunct = cert_pem(&read(d, "disjunct.p12"), "").unwrap();
    assert_eq!(pem::parse_many(&disjunct).unwrap().len(), 4);
    assert!(disjunct.starts_with(&normalized(&text(d, "leaf.crt"))));
}

#[test]
fn errors_are_fixed_text_and_work_is_bounded() {
    let d = fixtures();
    let err = key_pem(&read(d, "pass-1234.p12"), "wrong").unwrap_err();
    assert_eq!(err, "the MAC does not match: wrong password?");
    let started = std::time::Instant::now();
    let err = key_pem(&read(d, "costly.p12"), "").unwrap_err();
    assert!(
        err.contains("more than 600000 key-derivation iterations"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    assert!(
        key_pem(b"not a pkcs12 file", "")
            .unwrap_err()
            .contains("not a PKCS#12 file")
    );
    let huge = vec![0x30u8; MAX_PKCS12_BYTES + 1];
    assert!(
        key_pem(&huge, "")
            .unwrap_err()
            .contains("over 262144 bytes")
    );
}

#[test]
fn pem_to_pkcs12_is_read_back_by_openssl() {
    let d = fixtures();
    let leaf = text(d, "leaf.crt");
    for (key_file, chain, pass) in [
        ("leaf.key", false, "password"),
        ("leaf.rsa", true, ""),
        ("inter.key", false, ""),
    ] {
        let (cert, key) = if key_file == "inter.key" {
            (text(d, "inter.crt"), text(d, key_file))
        } else if chain {
            (
                [leaf.clone(), text(d, "inter.crt"), text(d, "root.crt")].concat(),
                text(d, key_file),
            )
        } else {
            (leaf.clone(), text(d, key_file))
        };
        let b64 = from_pem(&cert, &key, chain, pass).unwrap();
        let der = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .unwrap();
        let out = d.join(format!("written-{key_file}.p12"));
        std::fs::write(&out, &der).unwrap();
        let passin = format!("pass:{pass}");
        let certs = String::from_utf8(openssl(
            d,
            &[
                "pkcs12",
                "-in",
                out.to_str().unwrap(),
                "-passin",
                &passin,
                "-nokeys",
            ],
        ))
        .unwrap();
        assert_eq!(
            pem::parse_many(&certs).unwrap().len(),
            if chain { 3 } else { 1 },
            "{key_file}"
        );
        let keys = String::from_utf8(openssl(
            d,
            &[
                "pkcs12",
                "-in",
                out.to_str().unwrap(),
                "-passin",
                &passin,
                "-nocerts",
                "-nodes",
            ],
        ))
        .unwrap();
        let want = String::from_utf8(openssl(
            d,
            &["pkcs8", "-topk8", "-nocrypt", "-in", key_file],
        ))
        .unwrap();
        assert_eq!(normalized(&keys), normalized(&want), "{key_file}");
        // And by our reader, as ESO's pemToPkcs12 → pkcs12key round trip.
        assert_eq!(
            key_pem(&der, pass).unwrap(),
            normalized(&want),
            "{key_file}"
        );
    }
    // An EC key in SEC1 form.
    let sec1 = openssl(d, &["ec", "-in", "inter.key"]);
    let b64 = from_pem(
        &text(d, "inter.crt"),
        std::str::from_utf8(&sec1).unwrap(),
        false,
        "",
    )
    .unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert!(key_pem(&der, "").is_ok());
}

#[test]
fn template_functions_read_binary_values_and_pipelines() {
    let d = fixtures();
    let values: crate::providers::SecretMap = [
        (
            "keystore".to_string(),
            SecretValue::new(read(d, "pass-1234.p12")),
        ),
        (
            "keystore_b64".to_string(),
            SecretValue::new(
                base64::engine::general_purpose::STANDARD
                    .encode(read(d, "nopass.p12"))
                    .into_bytes(),
            ),
        ),
        ("cert".to_string(), SecretValue::new(read(d, "leaf.crt"))),
        ("key".to_string(), SecretValue::new(read(d, "leaf.key"))),
    ]
    .into();
    let r = Renderer::new(&values).unwrap();
    let render = |src: &str| {
        String::from_utf8(r.render(src).unwrap_or_else(|e| panic!("{src}: {e}"))).unwrap()
    };
    let want_key = normalized(&text(d, "leaf.pk8"));
    assert_eq!(
        render(r#"{{ .keystore | pkcs12keyPass "1234" }}"#),
        want_key
    );
    assert_eq!(
        render(r#"{{ .keystore_b64 | b64dec | pkcs12key }}"#),
        want_key
    );
    assert!(
        render(r#"{{ .keystore_b64 | b64dec | pkcs12cert }}"#)
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );
    assert_eq!(
        render(r#"{{ pemToPkcs12 .cert .key | b64dec | pkcs12key }}"#),
        want_key
    );
    assert_eq!(
        render(r#"{{ fullPemToPkcs12Pass .cert .key "p" | b64dec | pkcs12keyPass "p" }}"#),
        want_key
    );
    // The error names the function and the cause, nothing of the file or password.
    let err = r
        .render(r#"{{ .keystore | pkcs12keyPass "s3cret-guess" }}"#)
        .unwrap_err();
    assert_eq!(
        err,
        "pkcs12keyPass: the MAC does not match: wrong password?"
    );
}

#[test]
fn truststore_is_read_back_by_openssl() {
    let d = fixtures();
    let certs = [text(d, "root.crt"), text(d, "inter.crt")].concat();
    let b64 = truststore_from_pem(&certs, "changeit").unwrap();
    let out = d.join("truststore.p12");
    std::fs::write(
        &out,
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap();
    let read = String::from_utf8(openssl(
        d,
        &[
            "pkcs12",
            "-in",
            out.to_str().unwrap(),
            "-passin",
            "pass:changeit",
            "-nokeys",
        ],
    ))
    .unwrap();
    assert_eq!(normalized(&read), normalized(&certs));
    assert!(truststore_from_pem("no pem here", "").is_err());
}
