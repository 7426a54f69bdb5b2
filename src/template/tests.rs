//! Engine v2 templates: ESO's and Sprig's documented outputs, and the bounds.

use super::*;
use crate::providers::SecretValue;

fn values(pairs: &[(&str, &str)]) -> SecretMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), SecretValue::new(v.as_bytes().to_vec())))
        .collect()
}

/// Renders `source` over `pairs`, as text.
fn render(source: &str, pairs: &[(&str, &str)]) -> Result<String, String> {
    let r = Renderer::new(&values(pairs))?;
    r.render(source)
        .map(|b| String::from_utf8(b).expect("text output"))
}

fn ok(source: &str) -> String {
    render(source, &[]).unwrap_or_else(|e| panic!("{source}: {e}"))
}

/// Each case: template, expected output. Outputs as Sprig's and ESO's docs (or Go) give them.
#[test]
fn functions_match_sprig_and_eso_docs() {
    let cases: &[(&str, &str)] = &[
        // Go text/template itself.
        (r#"{{ printf "%s:%s" "user" "pass" }}"#, "user:pass"),
        (
            r#"{{ printf "%05d|%-4s|%q|%x" 42 "ab" "q" "hi" }}"#,
            "00042|ab  |\"q\"|6869",
        ),
        (r#"{{ print "a" 1 2 "b" }}"#, "a1 2b"),
        (r#"{{ println "a" 1 }}"#, "a 1\n"),
        (r#"{{ html "<a href='x'>" }}"#, "&lt;a href=&#39;x&#39;&gt;"),
        (r#"{{ urlquery "a b&c" }}"#, "a+b%26c"),
        (r#"{{ slice "abcdef" 1 3 }}"#, "bc"),
        (r#"{{ len "abc" }} {{ index (list 1 2 3) 1 }}"#, "3 2"),
        (
            r#"[{{ index . "missing" }}] {{ index (dict "a" (list 1 2)) "a" 1 }} {{ index (dict) "x" }}"#,
            "[] 2 <no value>",
        ),
        (r#"{{ if and true (eq 1 1) }}y{{ else }}n{{ end }}"#, "y"),
        (
            r#"{{- range $i, $v := list "a" "b" }}{{ $i }}={{ $v }};{{ end -}}"#,
            "0=a;1=b;",
        ),
        (
            r#"{{ define "x" }}[{{ . }}]{{ end }}{{ template "x" "in" }}"#,
            "[in]",
        ),
        (r#"{{ block "b" "d" }}<{{ . }}>{{ end }}"#, "<d>"),
        // Sprig strings (masterminds.github.io/sprig/strings.html).
        (r#"{{ trim "   hello    " }}"#, "hello"),
        (r#"{{ trimAll "$" "$5.00" }}"#, "5.00"),
        (r#"{{ trimSuffix "-" "hello-" }}"#, "hello"),
        (r#"{{ trimPrefix "-" "-hello" }}"#, "hello"),
        (r#"{{ upper "hello" }}"#, "HELLO"),
        (r#"{{ lower "HELLO" }}"#, "hello"),
        (r#"{{ title "hello world" }}"#, "Hello World"),
        (r#"{{ untitle "Hello World" }}"#, "hello world"),
        (r#"{{ repeat 3 "hello" }}"#, "hellohellohello"),
        (r#"{{ substr 0 5 "hello world" }}"#, "hello"),
        (r#"{{ nospace "hello w o r l d" }}"#, "helloworld"),
        (r#"{{ trunc 5 "hello world" }}"#, "hello"),
        (r#"{{ trunc -5 "hello world" }}"#, "world"),
        (r#"{{ contains "cat" "catch" }}"#, "true"),
        (r#"{{ hasPrefix "cat" "catch" }}"#, "true"),
        (r#"{{ hasSuffix "cat" "catch" }}"#, "false"),
        (r#"{{ quote "a" "b\"c" }}"#, r#""a" "b\"c""#),
        (r#"{{ squote "a" }}"#, "'a'"),
        (
            r#"{{ cat "hello" "beautiful" "world" }}"#,
            "hello beautiful world",
        ),
        (r#"{{ indent 4 "a\nb" }}"#, "    a\n    b"),
        (r#"{{ nindent 4 "a" }}"#, "\n    a"),
        (
            r#"{{ "I Am Henry VIII" | replace " " "-" }}"#,
            "I-Am-Henry-VIII",
        ),
        (
            r#"{{ len "" | plural "one anchovy" "many anchovies" }}"#,
            "many anchovies",
        ),
        (r#"{{ toString 42 }}"#, "42"),
        (
            r#"{{ $a := split "$" "foo$bar$baz" }}{{ $a._0 }}{{ $a._2 }}"#,
            "foobaz",
        ),
        (r#"{{ splitList "$" "foo$bar$baz" }}"#, "[foo bar baz]"),
        (
            r#"{{ $a := splitn "$" 2 "foo$bar$baz" }}{{ $a._1 }}"#,
            "bar$baz",
        ),
        (r#"{{ list "a" "b" | join "," }}"#, "a,b"),
        (r#"{{ list "b" "a" "c" | sortAlpha }}"#, "[a b c]"),
        // Encodings and hashes.
        (r#"{{ "hello" | b64enc }}"#, "aGVsbG8="),
        (r#"{{ "aGVsbG8=" | b64dec }}"#, "hello"),
        (r#"{{ "68656c6c6f" | hexdec }}"#, "hello"),
        (
            r#"{{ "hello" | b32enc }} {{ "foobar" | b32enc }} {{ "" | b32enc }}"#,
            "NBSWY3DP MZXW6YTBOI====== ",
        ),
        (
            r#"{{ "NBSWY3DP" | b32dec }}{{ "MZXW6YTBOI======" | b32dec }}"#,
            "hellofoobar",
        ),
        (
            r#"{{ abbrev 5 "hello world" }} {{ abbrev 20 "hello world" }}"#,
            "he... hello world",
        ),
        (
            r#"{{ initials "First Try" }} {{ swapcase "This Is A.Test" }}"#,
            "FT tHIS iS a.tEST",
        ),
        (
            r#"{{ sha256sum "Hello world!" }}"#,
            "c0535e4be2b79ffd93291305436bf889314e4a3faec05ecffcbb7df31ad9e51a",
        ),
        (
            r#"{{ sha1sum "Hello world!" }}"#,
            "d3486ae9136e7856bc42212385ea797094475802",
        ),
        (r#"{{ adler32sum "Hello world!" }}"#, "487130206"),
        // Numbers and lists.
        (
            r#"{{ add 1 2 3 }} {{ add1 5 }} {{ sub 5 3 }} {{ mul 2 3 4 }} {{ div 7 2 }} {{ mod 7 2 }}"#,
            "6 6 2 24 3 1",
        ),
        (r#"{{ max 1 5 3 }} {{ min 4 2 9 }}"#, "5 2"),
        (r#"{{ atoi "42" | add1 }} {{ int "7" }}"#, "43 7"),
        (r#"{{ until 5 }}"#, "[0 1 2 3 4]"),
        (r#"{{ untilStep 3 6 2 }}"#, "[3 5]"),
        (
            r#"{{ seq 5 }}|{{ seq 2 4 }}|{{ seq 0 2 10 }}"#,
            "1 2 3 4 5|2 3 4|0 2 4 6 8 10",
        ),
        (
            r#"{{ list 1 2 3 | first }} {{ list 1 2 3 | last }} {{ list 1 2 3 | rest }} {{ list 1 2 3 | initial }}"#,
            "1 3 [2 3] [1 2]",
        ),
        (
            r#"{{ append (list 1 2) 3 }} {{ prepend (list 1 2) 0 }} {{ concat (list 1) (list 2 3) }}"#,
            "[1 2 3] [0 1 2] [1 2 3]",
        ),
        (
            r#"{{ list 1 1 2 | uniq }} {{ without (list 1 2 3) 2 }} {{ has 4 (list 1 2 3) }} {{ list 1 "" 2 | compact }} {{ list 1 2 | reverse }}"#,
            "[1 2] [1 3] false [1 2] [2 1]",
        ),
        // Dicts.
        (
            r#"{{ $d := dict "name1" "value1" "name2" "value2" }}{{ get $d "name1" }}{{ get $d "nope" }}"#,
            "value1",
        ),
        (
            r#"{{ $d := dict "a" 1 }}{{ $d = set $d "b" 2 }}{{ $d }} {{ hasKey $d "b" }} {{ unset $d "a" }}"#,
            "map[a:1 b:2] true map[b:2]",
        ),
        (
            r#"{{ pluck "name1" (dict "name1" "v1") (dict "name1" "v2") }}"#,
            "[v1 v2]",
        ),
        (
            r#"{{ keys (dict "b" 1 "a" 2) | sortAlpha }} {{ values (dict "a" 1 "b" 2) }}"#,
            "[a b] [1 2]",
        ),
        (
            r#"{{ pick (dict "a" 1 "b" 2 "c" 3) "a" "c" }} {{ omit (dict "a" 1 "b" 2) "a" }}"#,
            "map[a:1 c:3] map[b:2]",
        ),
        (
            r#"{{ merge (dict "a" 1 "n" (dict "x" 1)) (dict "a" 2 "b" 3 "n" (dict "y" 2)) }}"#,
            "map[a:1 b:3 n:map[x:1 y:2]]",
        ),
        (
            r#"{{ mergeOverwrite (dict "a" 1) (dict "a" 2) }}"#,
            "map[a:2]",
        ),
        (
            r#"{{ dig "user" "role" "name" "guest" (dict "user" (dict "role" (dict "name" "admin"))) }} {{ dig "x" "d" (dict) }}"#,
            "admin d",
        ),
        // Defaults and flow.
        (
            r#"{{ "" | default "foo" }} {{ "bar" | default "foo" }}"#,
            "foo bar",
        ),
        (
            r#"{{ empty "" }} {{ empty 0 }} {{ empty (list) }} {{ empty "x" }}"#,
            "true true true false",
        ),
        (r#"{{ coalesce "" 0 "x" "y" }}"#, "x"),
        (r#"{{ all 1 "a" }} {{ any 0 "" "b" }}"#, "true true"),
        (
            r#"{{ true | ternary "foo" "bar" }} {{ ternary "foo" "bar" false }}"#,
            "foo bar",
        ),
        // JSON and YAML.
        (
            r#"{{ $j := fromJson "{\"port\": 8080, \"name\": \"db\"}" }}{{ $j.name }}:{{ $j.port }}"#,
            "db:8080",
        ),
        (
            r#"{{ dict "b" "<x>" "a" (list 1 2.5) | toJson }}"#,
            r#"{"a":[1,2.5],"b":"\u003cx\u003e"}"#,
        ),
        (r#"{{ dict "b" "<x>" | toRawJson }}"#, r#"{"b":"<x>"}"#),
        (r#"{{ dict "a" 1 | toPrettyJson }}"#, "{\n  \"a\": 1\n}"),
        (
            r#"{{ dict "name" "db" "ports" (list 1 2) | toYaml }}"#,
            "name: db\nports:\n- 1\n- 2",
        ),
        (
            r#"{{ $y := fromYaml "a: b\nn: [1, 2]\n" }}{{ $y.a }} {{ index $y.n 1 }}"#,
            "b 2",
        ),
        // Regular expressions (Sprig's examples).
        (
            r#"{{ regexMatch "^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\\.[a-zA-Z]{2,}$" "test@acme.com" }}"#,
            "true",
        ),
        (
            r#"{{ regexFindAll "[2,4,6,8]" "123456789" -1 }} {{ regexFindAll "[2,4,6,8]" "123456789" 2 }}"#,
            "[2 4 6 8] [2 4]",
        ),
        (r#"{{ regexFind "[a-zA-Z][1-9]" "abcd1234" }}"#, "d1"),
        (
            r#"{{ regexReplaceAll "a(x*)b" "-ab-axxb-" "${1}W" }}"#,
            "-W-xxW-",
        ),
        (
            r#"{{ regexReplaceAllLiteral "a(x*)b" "-ab-axxb-" "${1}" }}"#,
            "-${1}-${1}-",
        ),
        (r#"{{ regexSplit "z+" "pizza" -1 }}"#, "[pi a]"),
        (r#"{{ regexQuoteMeta "1.2.3" }}"#, "1\\.2\\.3"),
        // Types and paths.
        (
            r#"{{ typeOf "x" }} {{ kindOf (list) }} {{ kindIs "map" (dict) }} {{ typeIs "int" 1 }}"#,
            "string slice true true",
        ),
        (
            r#"{{ base "foo/bar/baz.txt" }} {{ dir "foo/bar/baz.txt" }} {{ ext "baz.txt" }} {{ isAbs "/a" }}"#,
            "baz.txt foo/bar .txt true",
        ),
    ];
    let mut failures = Vec::new();
    for (source, expected) in cases {
        match render(source, &[]) {
            Ok(out) if out == *expected => {}
            Ok(out) => failures.push(format!(
                "{source}\n  got      {out:?}\n  expected {expected:?}"
            )),
            Err(e) => failures.push(format!("{source}\n  error {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The templates of ESO's guide (docs/guides/templating.md and its snippets), over values.
#[test]
fn eso_guide_templates() {
    let vals = [
        ("username", "admin"),
        ("password", "s3cr3t"),
        ("service-account-token", "tok"),
        ("config", r#"{"db": {"host": "db.local", "port": 5432}}"#),
    ];
    let cases: &[(&str, &str)] = &[
        ("{{ .username }}:{{ .password }}", "admin:s3cr3t"),
        (r#"{{ index . "service-account-token" }}"#, "tok"),
        (
            r#"{"auths": {"r.io": {"auth": "{{ printf "%s:%s" .username .password | b64enc }}"}}}"#,
            r#"{"auths": {"r.io": {"auth": "YWRtaW46czNjcjN0"}}}"#,
        ),
        ("new: {{ .username | upper }}", "new: ADMIN"),
        (
            "{{- $c := .config | fromJson }}host={{ $c.db.host }} port={{ $c.db.port }}",
            "host=db.local port=5432",
        ),
        (
            "{{ range $k, $v := . }}{{ if hasPrefix \"user\" $k }}{{ $k }}={{ $v }}{{ end }}{{ end }}",
            "username=admin",
        ),
    ];
    for (source, expected) in cases {
        assert_eq!(render(source, &vals).as_deref(), Ok(*expected), "{source}");
    }
    // ESO executes with missingkey=error.
    let err = render("{{ .nope }}", &vals).unwrap_err();
    assert!(err.contains("no entry for key \"nope\""), "{err}");
}

const CERT: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUAQID\n-----END CERTIFICATE-----\n";
const KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqG\n-----END PRIVATE KEY-----\n";

/// ESO's filterPEM: the blocks of one type, in order, re-encoded; junk refused.
#[test]
fn filter_pem_keeps_blocks_of_one_type() {
    let bundle = format!("{KEY}{CERT}{CERT}");
    let out = render(
        r#"{{ .bundle | filterPEM "CERTIFICATE" }}"#,
        &[("bundle", &bundle)],
    )
    .unwrap();
    assert_eq!(out, format!("{CERT}{CERT}"));
    let out = render(
        r#"{{ .bundle | filterPEM "private key" }}"#,
        &[("bundle", &bundle)],
    )
    .unwrap();
    assert_eq!(out, KEY);
    let err = render(r#"{{ .j | filterPEM "CERTIFICATE" }}"#, &[("j", "junk")]).unwrap_err();
    assert!(err.contains("found junk"), "{err}");
}

/// A value that is not UTF-8 stays bytes: copied exactly when printed, encoded exactly by
/// b64enc and hashed as bytes; b64dec of binary gives the bytes back.
#[test]
fn binary_values_stay_bytes() {
    let raw: Vec<u8> = vec![0x30, 0x82, 0xff, 0x00, 0xc3, b'a', 0xe9];
    let mut vals = SecretMap::new();
    vals.insert("der".into(), SecretValue::new(raw.clone()));
    let r = Renderer::new(&vals).unwrap();
    assert_eq!(r.render("{{ .der }}").unwrap(), raw);
    assert_eq!(
        r.render("x{{ .der }}y").unwrap(),
        [b"x".as_slice(), &raw, b"y"].concat()
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    use base64::Engine as _;
    assert_eq!(r.render("{{ .der | b64enc }}").unwrap(), b64.as_bytes());
    assert_eq!(
        r.render(&format!("{{{{ \"{b64}\" | b64dec }}}}")).unwrap(),
        raw
    );
    use sha2::Digest as _;
    assert_eq!(
        r.render("{{ .der | sha256sum }}").unwrap(),
        hex::encode(sha2::Sha256::digest(&raw)).as_bytes()
    );
    // Text values are untouched; a text value with the reserved characters is refused by key.
    assert_eq!(render("{{ .s }}", &[("s", "zé€😀")]).unwrap(), "zé€😀");
    let err = render("", &[("odd", "\u{10FFAA}")]).err().unwrap();
    assert!(
        err.contains("\"odd\"") && !err.contains('\u{10FFAA}'),
        "{err}"
    );
}

const PIN: &str = "4242-SECRET-PIN";

/// Errors name the failure, never the value: the engine's own messages (which may print an
/// operand) are reduced to their kind; ours are fixed text.
#[test]
fn errors_never_quote_values() {
    let cases: &[(&str, &str)] = &[
        ("{{ .pin | b64dec }}", "b64dec: input is not base64"),
        ("{{ .pin | fromJson }}", "fromJson: input is not JSON"),
        ("{{ .pin | hexdec }}", "hexdec: input is not hexadecimal"),
        (
            "{{ regexMatch \"(\" .pin }}",
            "regexMatch: invalid regular expression",
        ),
        ("{{ range .pin }}{{ end }}", "cannot range over string"),
        ("{{ .pin.field }}", "execution error"),
        ("{{ len 5 }}", "execution error"),
        ("{{ index .pin 99 }}", "index out of range"),
        ("{{ fail .pin }}", "fail was called"),
        ("{{ printf .pin }}", ""),
        ("{{ div 1 0 }}", "div: division by zero"),
        (
            "{{ .pin | nosuchfunc }}",
            "function \"nosuchfunc\" not defined",
        ),
        ("{{ .pin ", "unclosed action"),
        ("{{ template \"nope\" }}", "undefined template"),
    ];
    for (source, expected) in cases {
        let out = render(source, &[("pin", PIN)]);
        let text = match &out {
            Ok(o) => o.clone(),
            Err(e) => {
                assert!(e.contains(expected), "{source}: {e}");
                e.clone()
            }
        };
        if !source.starts_with("{{ printf") {
            assert!(out.is_err(), "{source}: rendered {text:?}");
        }
        assert!(
            out.is_ok() || !text.contains("4242"),
            "{source}: value leaked: {text}"
        );
    }
}

/// Each of these ran for minutes (or forever) without the step budget.
#[test]
fn steps_are_bounded() {
    let cases = [
        "{{ range 1000000000 }}{{ end }}",
        "{{ range $a := until 10000 }}{{ range $b := until 10000 }}{{ end }}{{ end }}",
        "{{ range until 10000 }}{{ range until 10000 }}x{{ end }}{{ end }}",
        // Recursion that never goes deep but fans out: 2^depth calls.
        r#"{{ define "f" }}{{ if lt (len .) 30 }}{{ template "f" (printf "%sa" .) }}{{ template "f" (printf "%sb" .) }}{{ end }}{{ end }}{{ template "f" "" }}"#,
        // Comparisons of two 1 MiB strings equal but for the last byte.
        r#"{{ $a := repeat 1000000 "a" }}{{ $b := printf "%sb" (repeat 999999 "a") }}{{ range until 10000 }}{{ if eq $a $b }}{{ end }}{{ end }}"#,
        // Functions in a loop, without output.
        "{{ range until 10000 }}{{ $x := sha256sum \"a\" }}{{ range until 10000 }}{{ $y := upper \"b\" }}{{ end }}{{ end }}",
    ];
    for source in cases {
        let started = std::time::Instant::now();
        let err = render(source, &[]).unwrap_err();
        assert!(
            err.contains(&format!("exceeds {MAX_STEPS} steps")),
            "{source}: {err}"
        );
        assert!(
            started.elapsed().as_secs() < 5,
            "{source}: {:?}",
            started.elapsed()
        );
    }
}

/// A template that calls itself forever stops at the call depth, on an ordinary 2 MiB thread
/// stack (Tokio's blocking pool gives its threads 2 MiB).
#[test]
fn recursion_depth_is_bounded() {
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let err = render(
                r#"{{ define "r" }}{{ template "r" . }}{{ end }}{{ template "r" . }}"#,
                &[],
            )
            .unwrap_err();
            assert!(
                err.contains(&format!("nest deeper than {MAX_CALL_DEPTH}")),
                "{err}"
            );
            // The deepest the executor goes (gotmpl's limit of 200): 32 calls, each 6 blocks in.
            let nested = format!(
                r#"{{{{ define "r" }}}}{}{{{{ template "r" . }}}}{}{{{{ end }}}}{{{{ template "r" . }}}}"#,
                "{{ if true }}{{ range list 1 }}{{ with 1 }}".repeat(2),
                "{{ end }}{{ end }}{{ end }}".repeat(2)
            );
            let err = render(&nested, &[]).unwrap_err();
            assert!(err.contains("nest"), "{err}");
            // Deeply nested blocks are refused by the parser.
            let deep = format!(
                "{}x{}",
                "{{ if true }}".repeat(500),
                "{{ end }}".repeat(500)
            );
            assert!(render(&deep, &[]).is_err());
            let parens = format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
            assert!(render(&parens, &[]).is_err());
        })
        .unwrap();
    handle.join().expect("no stack overflow");
}

/// Output, value size, list length, value depth and total allocation are each capped before
/// memory grows.
#[test]
fn memory_and_output_are_bounded() {
    let cases: &[(&str, &str)] = &[
        // Output in a loop.
        (
            r#"{{ range until 10000 }}{{ printf "%65535d" 1 }}{{ end }}"#,
            "output exceeds 1048576 bytes",
        ),
        // One huge allocation.
        (
            r#"{{ repeat 1000000000 "x" }}"#,
            "repeat: result would exceed",
        ),
        (
            r#"{{ until 1000000000 }}"#,
            "until: result would have more than",
        ),
        (
            r#"{{ seq 1000000000 }}"#,
            "seq: result would have more than",
        ),
        (
            r#"{{ $x := printf "%65535d" 1 }}{{ range until 20 }}{{ $x = printf "%s%s" $x $x }}{{ end }}"#,
            "printf: result would exceed",
        ),
        (
            r#"{{ $x := repeat 60000 "a" }}{{ range until 20 }}{{ $x = cat $x $x }}{{ end }}"#,
            "cat: result exceeds",
        ),
        (
            r#"{{ $x := "<&>" }}{{ range until 40 }}{{ $x = html $x $x }}{{ end }}"#,
            "html: result",
        ),
        (
            r#"{{ replace "" (repeat 1000 "y") (repeat 100000 "x") }}"#,
            "replace: result would exceed",
        ),
        (
            r#"{{ indent 1000000 (repeat 1000 "\n") }}"#,
            "indent: result would exceed",
        ),
        (
            r#"{{ regexReplaceAll "" (repeat 100000 "x") (repeat 100 "y") }}"#,
            "regexReplaceAll: result would exceed",
        ),
        // Nesting that would overflow the stack of whoever prints or compares it.
        (
            r#"{{ $d := dict }}{{ range until 1000 }}{{ $d = dict "a" $d }}{{ end }}{{ $d }}"#,
            "dict: result nests deeper than",
        ),
        // Many values, each under the cap, kept alive at once.
        (
            r#"{{ $l := list }}{{ range until 5000 }}{{ $l = append $l (repeat 60000 "z") }}{{ end }}"#,
            "exceed",
        ),
        (
            r#"{{ range until 2000 }}{{ $x := repeat 1000000 "z" }}{{ end }}"#,
            "its functions' results exceed",
        ),
    ];
    for (source, expected) in cases {
        let started = std::time::Instant::now();
        let err = render(source, &[])
            .err()
            .unwrap_or_else(|| panic!("{source}: rendered"));
        assert!(err.contains(expected), "{source}: {err}");
        assert!(
            started.elapsed().as_secs() < 5,
            "{source}: {:?}",
            started.elapsed()
        );
    }
    // Just under the output cap is fine.
    let out = ok(r#"{{ range until 16 }}{{ printf "%65535d" 1 }}{{ end }}"#);
    assert_eq!(out.len(), 16 * 65535);
}

/// The hidden step and depth functions cannot be called by a template, and a `define` may not
/// take the body's name.
#[test]
fn hidden_names_are_unreachable() {
    assert!(render("{{ step! 1 }}", &[]).is_err());
    let err = render(r#"{{ define "template!" }}x{{ end }}"#, &[]).unwrap_err();
    assert!(err.contains("multiple definition"), "{err}");
}

#[test]
fn byte_carriers_round_trip() {
    let all: Vec<u8> = (0..=255u8).chain([0xe2, 0x82, 0xac, 0xf0, 0x9f]).collect();
    assert_eq!(uncarry_bytes(&carry_bytes(&all)), all);
    assert_eq!(carry_bytes("plain é".as_bytes()), "plain é");
}

/// ESO's jwk functions give what Go's x509 marshalling gives (ESO's own test vectors:
/// runtime/template/v2/template_test.go).
#[test]
fn jwk_functions_match_eso() {
    let cases = [
        (
            "jwkPublicKeyPem",
            include_str!("testdata/jwkPubRSA.txt"),
            include_str!("testdata/jwkPubRSAPKIX.txt"),
        ),
        (
            "jwkPrivateKeyPem",
            include_str!("testdata/jwkPrivRSA.txt"),
            include_str!("testdata/jwkPrivRSAPKCS8.txt"),
        ),
        (
            "jwkPublicKeyPem",
            include_str!("testdata/jwkPubEC.txt"),
            include_str!("testdata/jwkPubECPKIX.txt"),
        ),
        (
            "jwkPrivateKeyPem",
            include_str!("testdata/jwkPrivEC.txt"),
            include_str!("testdata/jwkPrivECPKCS8.txt"),
        ),
    ];
    for (func, jwk, expected) in cases {
        let out = render(&format!("{{{{ .secret | {func} }}}}"), &[("secret", jwk)]).unwrap();
        assert_eq!(out, expected, "{func} of {jwk}");
    }
    // The public part of a private key.
    let out = render(
        "{{ .secret | jwkPublicKeyPem }}",
        &[("secret", include_str!("testdata/jwkPrivEC.txt"))],
    )
    .unwrap();
    assert!(out.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{out}");
    // Ed25519 (RFC 8037 appendix A.1): Go gives these PEMs.
    let ed = r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    assert_eq!(
        render("{{ .k | jwkPublicKeyPem }}", &[("k", ed)]).unwrap(),
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n"
    );
    assert_eq!(
        render("{{ .k | jwkPrivateKeyPem }}", &[("k", ed)]).unwrap(),
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n"
    );
    let err = render(
        "{{ .k | jwkPrivateKeyPem }}",
        &[("k", include_str!("testdata/jwkPubRSA.txt"))],
    )
    .unwrap_err();
    assert!(
        err.contains("jwkPrivateKeyPem: the key has no \"d\" member"),
        "{err}"
    );
}

/// Sprig's htpasswd (ESO's guide uses it for ingress basic auth) and bcrypt: Go's format
/// (`$2a$10$`), verifiable; the `sha` form is deterministic.
#[test]
fn htpasswd_and_bcrypt() {
    let line = render(
        r#"{{ htpasswd .user .pass }}"#,
        &[("user", "alice"), ("pass", "pw")],
    )
    .unwrap();
    let hash = line.strip_prefix("alice:").expect("user first");
    assert!(hash.starts_with("$2a$10$"), "{line}");
    assert!(bcrypt::verify("pw", hash).unwrap());
    assert_eq!(
        render(r#"{{ htpasswd "alice" "pw" "sha" }}"#, &[]).unwrap(),
        "alice:{SHA}GpHWL3ymc5liWkNopqtdSjuqYHM="
    );
    let err = render(r#"{{ htpasswd "a:b" "pw" }}"#, &[]).unwrap_err();
    assert!(err.contains("invalid username"), "{err}");
    let b = render(r#"{{ bcrypt "pw" }}"#, &[]).unwrap();
    assert!(bcrypt::verify("pw", &b).unwrap(), "{b}");
}
