//! Sprig's date, random, semver, URL, float, case and list functions: the outputs Sprig's
//! documentation (or Go) gives.

use super::*;

fn ok(source: &str) -> String {
    let r = Renderer::new(&SecretMap::new()).unwrap();
    String::from_utf8(r.render(source).unwrap_or_else(|e| panic!("{source}: {e}"))).unwrap()
}

fn err(source: &str) -> String {
    Renderer::new(&SecretMap::new())
        .unwrap()
        .render(source)
        .expect_err(source)
}

#[test]
fn dates_as_sprig() {
    let cases: &[(&str, &str)] = &[
        (r#"{{ duration 95 }}"#, "1m35s"),
        (r#"{{ duration "3661" }}"#, "1h1m1s"),
        (r#"{{ duration 0 }}"#, "0s"),
        (r#"{{ durationRound "2h10m5s" }}"#, "2h"),
        (r#"{{ durationRound "400h" }}"#, "16d"),
        (
            r#"{{ toDate "2006-01-02" "2017-12-31" | date "02/01/2006" }}"#,
            "31/12/2017",
        ),
        (r#"{{ htmlDate 1700000000 }}"#, "2023-11-14"),
        (r#"{{ htmlDateInZone 1700000000 "UTC" }}"#, "2023-11-14"),
        (
            r#"{{ dateInZone "2006-01-02 15:04:05 MST" 1700000000 "UTC" }}"#,
            "2023-11-14 22:13:20 UTC",
        ),
        (
            r#"{{ date "Mon Jan _2 3:04PM .000 -07:00" 1700000000 }}"#,
            "Tue Nov 14 10:13PM .000 +00:00",
        ),
        (
            r#"{{ date "January 2, 06 002" 1700000000 }}"#,
            "November 14, 23 318",
        ),
        (
            r#"{{ toDate "2006-01-02T15:04:05Z07:00" "2021-03-04T05:06:07+02:00" | unixEpoch }}"#,
            "1614827167",
        ),
        (
            r#"{{ toDate "2006-01-02 15:04:05.000" "2021-03-04 05:06:07.250" }}"#,
            "2021-03-04T05:06:07.250Z",
        ),
        (
            r#"{{ dateModify "-1.5h" (toDate "2006-01-02" "2020-01-01") | date "2006-01-02 15:04" }}"#,
            "2019-12-31 22:30",
        ),
        (r#"{{ ago (dateModify "-1h" now) }}"#, "1h0m0s"),
        (r#"{{ unixEpoch 42 }}"#, "42"),
    ];
    for (source, want) in cases {
        assert_eq!(ok(source), *want, "{source}");
    }
    let year = ok(r#"{{ now | date "2006" }}"#);
    assert_eq!(year, chrono::Utc::now().format("%Y").to_string());
    // Failing loudly where Sprig silently uses the current time or UTC.
    assert!(err(r#"{{ date "2006" "yesterday" }}"#).contains("RFC 3339"));
    assert!(err(r#"{{ dateInZone "2006" 0 "Europe/Paris" }}"#).contains("time zones"));
    assert!(err(r#"{{ mustToDate "2006-01-02" "31/12/2017" }}"#).contains("does not match"));
    assert!(err(r#"{{ mustDateModify "soon" now }}"#).contains("invalid duration"));
}

#[test]
fn random_as_sprig() {
    for (source, re) in [
        (r#"{{ randAlphaNum 16 }}"#, "^[a-zA-Z0-9]{16}$"),
        (r#"{{ randAlpha 8 }}"#, "^[a-zA-Z]{8}$"),
        (r#"{{ randNumeric 6 }}"#, "^[0-9]{6}$"),
        (r#"{{ randAscii 10 }}"#, "^[ -~]{10}$"),
        (r#"{{ randBytes 24 }}"#, "^[A-Za-z0-9+/]{32}$"),
        (
            r#"{{ uuidv4 }}"#,
            "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        ),
        (r#"{{ shuffle "hello" }}"#, "^[ehlo]{5}$"),
    ] {
        let out = ok(source);
        assert!(
            regex::Regex::new(re).unwrap().is_match(&out),
            "{source}: {out}"
        );
    }
    assert_ne!(ok("{{ randAlphaNum 32 }}"), ok("{{ randAlphaNum 32 }}"));
    assert_eq!(ok("{{ randInt 1 2 }}"), "1");
    // Bounded like every other result.
    assert!(err("{{ randAlphaNum 2000000 }}").contains("bytes"));
}

#[test]
fn semver_and_urls_as_sprig() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{{ $v := semver "1.2.3-alpha.1+123" }}{{ $v.Major }}.{{ $v.Minor }}.{{ $v.Patch }} {{ $v.Prerelease }} {{ $v.Metadata }}"#,
            "1.2.3 alpha.1 123",
        ),
        (r#"{{ (semver "v2.1").Minor }}"#, "1"),
        (r#"{{ semverCompare "^1.2.0" "1.2.3" }}"#, "true"),
        (r#"{{ semverCompare "~1.2.0" "1.3.0" }}"#, "false"),
        (r#"{{ semverCompare ">= 1.2, < 3.0.0" "2.0.0" }}"#, "true"),
        (r#"{{ semverCompare ">=1.2 <3" "3.1.0" }}"#, "false"),
        (r#"{{ semverCompare "1.2.3" "1.2.4" }}"#, "false"),
        (r#"{{ semverCompare "1.x" "1.5.0" }}"#, "true"),
        (r#"{{ semverCompare "1.0 - 2.0" "1.5.0" }}"#, "true"),
        (r#"{{ semverCompare "<1.0.0 || >=3" "3.1.0" }}"#, "true"),
        (
            r#"{{ $u := urlParse "http://admin:secret@server.com:8080/api?list=false#anchor" }}{{ $u.scheme }} {{ $u.host }} {{ $u.hostname }} {{ $u.path }} {{ $u.query }} {{ $u.fragment }} {{ $u.userinfo }}"#,
            "http server.com:8080 server.com /api list=false anchor admin:secret",
        ),
        (
            r#"{{ urlJoin (dict "fragment" "fragment" "host" "host:80" "path" "/path" "query" "query" "scheme" "http") }}"#,
            "http://host:80/path?query#fragment",
        ),
    ];
    for (source, want) in cases {
        assert_eq!(ok(source), *want, "{source}");
    }
    assert!(err(r#"{{ semver "one.two" }}"#).contains("invalid semantic version"));
    assert!(err(r#"{{ urlParse "not a url" }}"#).contains("invalid URL"));
}

#[test]
fn floats_cases_and_lists_as_sprig() {
    let cases: &[(&str, &str)] = &[
        (r#"{{ addf 1.5 2 2 }}"#, "5.5"),
        (r#"{{ add1f 1.5 }}"#, "2.5"),
        (r#"{{ subf 7.5 2 3 }}"#, "2.5"),
        (r#"{{ mulf 1.5 2 2 }}"#, "6"),
        (r#"{{ divf 10 4 }}"#, "2.5"),
        (r#"{{ maxf 1 2.5 3 }}"#, "3"),
        (r#"{{ minf 1.5 2 3 }}"#, "1.5"),
        (r#"{{ ceil 1.1 }} {{ floor 1.9 }}"#, "2 1"),
        (r#"{{ round 123.555555 3 }}"#, "123.556"),
        (r#"{{ toDecimal "0777" }}"#, "511"),
        (r#"{{ camelcase "http_server" }}"#, "HttpServer"),
        (
            r#"{{ snakecase "FirstName" }} {{ snakecase "HTTPServer" }}"#,
            "first_name http_server",
        ),
        (r#"{{ kebabcase "FirstName" }}"#, "first-name"),
        (r#"{{ wrap 5 "Hello World" }}"#, "Hello\nWorld"),
        (r#"{{ wrapWith 5 "\t" "Hello World" }}"#, "Hello\tWorld"),
        (r#"{{ chunk 2 (list 1 2 3 4 5) }}"#, "[[1 2] [3 4] [5]]"),
        (r#"{{ deepEqual (list 1 2) (list 1 2) }}"#, "true"),
        (
            r#"{{ clean "foo/bar/../baz" }} {{ osBase "/a/b.txt" }} {{ osExt "b.tar.gz" }}"#,
            "foo/baz b.txt .gz",
        ),
        (r#"{{ typeIsLike "string" "x" }}"#, "true"),
        (r#"{{ abbrevboth 5 10 "1234 5678 9123" }}"#, "...5678..."),
        (r#"{{ hello }}"#, "Hello!"),
        (r#"{{ abbrevboth 5 10 "ééééééééééééé" | len }}"#, "12"),
    ];
    for (source, want) in cases {
        assert_eq!(ok(source), *want, "{source}");
    }
}

#[test]
fn aes_as_sprig_and_openssl() {
    assert_eq!(
        ok(r#"{{ encryptAES "secretkey" "plaintext" | decryptAES "secretkey" }}"#),
        "plaintext"
    );
    assert_eq!(ok(r#"{{ encryptAES "k" "" }}"#), "");
    assert!(
        err(r#"{{ encryptAES "secretkey" "plaintext" | decryptAES "other" }}"#).contains("decrypt")
    );
    assert!(err(r#"{{ decryptAES "k" "not base64!" }}"#).contains("base64"));
    // The same bytes openssl makes: key "secretkey" zero-padded to 32 bytes, IV from the text.
    let b64 = ok(r#"{{ encryptAES "secretkey" "hello, world" }}"#);
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &b64).unwrap();
    let (iv, ct) = raw.split_at(16);
    let mut key = b"secretkey".to_vec();
    key.resize(32, 0);
    let dir = std::env::temp_dir().join(format!("secret-relay-aes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ct"), ct).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "enc",
            "-d",
            "-aes-256-cbc",
            "-K",
            &hex::encode(&key),
            "-iv",
            &hex::encode(iv),
            "-in",
        ])
        .arg(dir.join("ct"))
        .output()
        .expect("the openssl CLI is installed");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "hello, world");
}
