//! Templates as External Secrets Operator's engine v2 renders them: Go `text/template` syntax
//! (through `gotmpl`, a Rust port of Go's package) over the fetched values, with Sprig's text
//! functions (minus `env`/`expandenv`) and ESO's own (see `funcs`).
//!
//! A template is a tenant's program run inside the operator, so every resource it can take is
//! bounded, per template:
//! - **steps** ([`MAX_STEPS`]): before it runs, the parsed tree is rewritten so that every list
//!   of nodes (the body, each `if`/`range`/`with` branch, each `define`) first calls a hidden
//!   function that charges the list's length; every function call charges one step plus one per
//!   4 KiB of arguments. A range over a huge number, nested ranges and `{{template}}` recursion
//!   all run out of steps. gotmpl's own range budget is set to the same number.
//! - **template call depth** ([`MAX_CALL_DEPTH`]): every `define` body is bracketed by hidden
//!   enter/leave calls.
//! - **values** ([`MAX_VALUE_BYTES`], [`MAX_VALUE_DEPTH`], [`MAX_LIST_LEN`]): every function's
//!   result is measured; functions that could allocate more than the cap (`repeat`, `until`,
//!   `printf`, `replace`, `indent`, ...) check their estimate before allocating.
//! - **memory** ([`MAX_ALLOC_BYTES`]): the results of all function calls of one template, added
//!   up.
//! - **output** ([`MAX_OUTPUT_BYTES`]).
//! - **per ExternalSecret** ([`Allowance`]): all the templates of one build together take at
//!   most [`MAX_SECRET_STEPS`] steps and [`MAX_SECRET_RENDER_TIME`] of wall-clock time,
//!   checked inside the engine, so no ExternalSecret's share grows with its number of keys.
//!
//! Values are strings, as ESO gives them (`map[string]string`). A value that is not UTF-8
//! (a keystore, a DER certificate) stays bytes: each byte of it that is not UTF-8 is carried
//! as one character of U+10FF80..U+10FFFF, turned back into that byte on output and by the
//! functions that read bytes (`b64enc`, `sha256sum`, ...), so `{{ .keystore }}` copies it
//! exactly and `{{ .keystore | b64enc }}` encodes the exact bytes, as Go's byte strings do.
//!
//! Errors never quote a value: parse errors (which quote only template text), the fixed
//! messages of our functions and the names of bounds are shown; an execution error of the
//! engine itself, whose message may print an operand, is reduced to its kind.

mod funcs;
mod jwk;
mod pem_chain;
pub mod pkcs12;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use gotmpl::{
    FuncMap, MissingKey, Template, TemplateError, Value,
    parse::{CommandNode, Expr, ListNode, Node, Number, Parser, PipeNode, Pos, SmolStr},
};

use crate::providers::SecretMap;

/// Steps one template may take: about one per node executed and per function called (see the
/// module doc). A real template takes a few hundred; nested ranges over `until 100000` ran for
/// minutes before this bound.
pub const MAX_STEPS: u64 = 50_000;

/// Bytes one template may output: 1 MiB, the size limit of a whole Secret. Output written in a
/// loop took the operator to 2.1 GiB in 20 s before this bound.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// Largest value (bytes, counting 16 per list or map entry) a function may return.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Longest list a function may return (`until`, `seq`, `splitList`, ...).
pub const MAX_LIST_LEN: usize = 10_000;

/// Deepest nesting of lists and maps a function may return (`dict` in a loop, `fromJson`).
/// Printing, comparing and serializing a value recurse once per level.
pub const MAX_VALUE_DEPTH: usize = crate::bounds::MAX_JSON_DEPTH;

/// Bytes all function results of one template may add up to: 64 MiB.
pub const MAX_ALLOC_BYTES: u64 = 64 << 20;

/// Steps all the templates of one ExternalSecret may take together (its `templateFrom`,
/// `template.data`, labels and annotations, or every key of a `rewrite` transform): ten
/// templates at [`MAX_STEPS`]. The bound per template alone let one ExternalSecret of 150
/// keys run 3 million steps, and 24 of them held every render slot for minutes.
pub const MAX_SECRET_STEPS: u64 = 10 * MAX_STEPS;

/// Wall-clock time all the templates of one ExternalSecret may run: 5 s, checked inside the
/// engine (every 64 steps), so a render ends, and frees its slot, when its time is up.
pub const MAX_SECRET_RENDER_TIME: Duration = Duration::from_secs(5);

/// Nesting of `{{template}}` calls.
pub const MAX_CALL_DEPTH: u64 = 32;

/// Longest template text (bytes).
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;

/// First of the 128 characters that carry the non-UTF-8 bytes 0x80..=0xFF of a binary value.
const BYTE_CARRIER_BASE: u32 = 0x10FF00;

/// Hidden function names: characters the lexer never yields in an identifier, so a template
/// cannot call them.
const STEP_FN: &str = "step!";
const ENTER_FN: &str = "enter!";
const LEAVE_FN: &str = "leave!";
const CHARGE_FN: &str = "charge!";
/// The name under which the template's body is executed.
const ROOT_NAME: &str = "template!";

/// What all the templates of one ExternalSecret may spend together: [`MAX_SECRET_STEPS`]
/// steps before [`MAX_SECRET_RENDER_TIME`] has passed since it was made. Shared by the
/// [`Renderer`]s of one build ([`Renderer::within`]).
pub struct Allowance {
    steps: AtomicU64,
    deadline: Instant,
}

impl Allowance {
    /// An allowance of [`MAX_SECRET_STEPS`] steps until [`MAX_SECRET_RENDER_TIME`] from now.
    pub fn new() -> Arc<Allowance> {
        Self::until(Instant::now() + MAX_SECRET_RENDER_TIME)
    }

    /// An allowance of [`MAX_SECRET_STEPS`] steps until `deadline`.
    pub fn until(deadline: Instant) -> Arc<Allowance> {
        Arc::new(Allowance {
            steps: AtomicU64::new(0),
            deadline,
        })
    }

    /// Charges `n` steps; the message of the bound passed, if one is.
    fn charge(&self, n: u64) -> Result<(), String> {
        let used = self.steps.fetch_add(n, Ordering::Relaxed) + n;
        if used > MAX_SECRET_STEPS {
            return Err(format!(
                "the templates of this ExternalSecret exceed {MAX_SECRET_STEPS} steps in all"
            ));
        }
        if (used - n) / 64 != used / 64 && Instant::now() > self.deadline {
            return Err(format!(
                "the templates of this ExternalSecret ran past their {} s",
                MAX_SECRET_RENDER_TIME.as_secs()
            ));
        }
        Ok(())
    }
}

/// What one template has spent, shared by the hidden functions and every template function.
pub(crate) struct Budget {
    steps: AtomicU64,
    alloc: AtomicU64,
    depth: AtomicU64,
    /// The fixed message of the first failure raised by our functions or bounds: safe to show.
    failure: Mutex<Option<String>>,
    /// What every template of the ExternalSecret spends together.
    allowance: Arc<Allowance>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::within(Allowance::new())
    }
}

impl Budget {
    fn within(allowance: Arc<Allowance>) -> Self {
        Budget {
            steps: AtomicU64::new(0),
            alloc: AtomicU64::new(0),
            depth: AtomicU64::new(0),
            failure: Mutex::new(None),
            allowance,
        }
    }

    fn reset(&self) {
        self.steps.store(0, Ordering::Relaxed);
        self.alloc.store(0, Ordering::Relaxed);
        self.depth.store(0, Ordering::Relaxed);
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Records `msg` (which must quote no value) as the cause and returns the engine's error.
    pub(crate) fn fail(&self, msg: impl Into<String>) -> TemplateError {
        let msg = msg.into();
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(msg.clone());
        }
        TemplateError::Exec(msg)
    }

    /// Charges `n` steps.
    pub(crate) fn step(&self, n: u64) -> Result<(), TemplateError> {
        let used = self.steps.fetch_add(n, Ordering::Relaxed) + n;
        if used > MAX_STEPS {
            return Err(self.fail(format!(
                "exceeds {MAX_STEPS} steps (loops too long or nested, or recursive templates)"
            )));
        }
        self.allowance.charge(n).map_err(|msg| self.fail(msg))
    }

    /// Charges `bytes` of allocation.
    pub(crate) fn alloc(&self, bytes: usize) -> Result<(), TemplateError> {
        let used = self.alloc.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        if used > MAX_ALLOC_BYTES {
            return Err(self.fail(format!(
                "its functions' results exceed {MAX_ALLOC_BYTES} bytes in all"
            )));
        }
        Ok(())
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Renders templates over one set of fetched values.
pub struct Renderer {
    data: Value,
    funcs: FuncMap,
    budget: Arc<Budget>,
}

impl Renderer {
    /// The values as the templates see them: a map of strings (binary values carried as
    /// described in the module doc). Errors: a UTF-8 value holding one of the reserved
    /// characters U+10FF80..U+10FFFF (named by key, never quoted).
    pub fn new(values: &SecretMap) -> Result<Self, String> {
        Self::within(values, Allowance::new())
    }

    /// As [`Renderer::new`], every template rendered spending from `allowance` too: the
    /// renderers of one ExternalSecret's build share one.
    pub fn within(values: &SecretMap, allowance: Arc<Allowance>) -> Result<Self, String> {
        let mut map = std::collections::BTreeMap::new();
        for (k, v) in values {
            let s = match v.as_str() {
                Some(s) if s.chars().any(is_byte_carrier) => {
                    return Err(format!(
                        "value of {k:?} holds characters U+10FF80..U+10FFFF, which templates \
                         reserve for binary bytes"
                    ));
                }
                Some(s) => s.to_string(),
                None => carry_bytes(v.as_bytes()),
            };
            map.insert(Arc::<str>::from(k.as_str()), Value::String(s.into()));
        }
        let root = Arc::new(map);
        let budget = Arc::new(Budget::within(allowance));
        let mut funcs = funcs::func_map(&budget);
        let b = budget.clone();
        funcs.insert(
            CHARGE_FN.into(),
            Arc::new(move |args: &[Value]| {
                let operand = args.first().cloned().unwrap_or(Value::Nil);
                b.step(1 + (funcs::measure(&operand).0 / 4096) as u64)?;
                Ok(operand)
            }),
        );
        // Go's `index` on ESO's data (a `map[string]string`) gives "" for a missing key; on
        // other maps (from fromJson, dict) nil, as gotmpl's does.
        let data = root.clone();
        funcs.insert(
            "index".into(),
            Arc::new(move |args: &[Value]| {
                let Some((first, indexes)) = args.split_first() else {
                    return Err(TemplateError::ArgCount {
                        name: "index".into(),
                        expected: 2,
                        got: 0,
                    });
                };
                let mut v = first.clone();
                for idx in indexes {
                    v = match (&v, idx) {
                        (Value::Map(m), Value::String(k))
                            if Arc::ptr_eq(m, &data) && !m.contains_key(k) =>
                        {
                            Value::String("".into())
                        }
                        _ => v.index(idx)?,
                    };
                }
                Ok(v)
            }),
        );
        let b = budget.clone();
        funcs.insert(
            STEP_FN.into(),
            Arc::new(move |args: &[Value]| {
                let n = args.first().and_then(Value::as_int).unwrap_or(1).max(1);
                b.step(n as u64)?;
                Ok(Value::String("".into()))
            }),
        );
        let b = budget.clone();
        funcs.insert(
            ENTER_FN.into(),
            Arc::new(move |_: &[Value]| {
                let depth = b.depth.fetch_add(1, Ordering::Relaxed) + 1;
                if depth > MAX_CALL_DEPTH {
                    return Err(b.fail(format!("template calls nest deeper than {MAX_CALL_DEPTH}")));
                }
                Ok(Value::String("".into()))
            }),
        );
        let b = budget.clone();
        funcs.insert(
            LEAVE_FN.into(),
            Arc::new(move |_: &[Value]| {
                b.depth.fetch_sub(1, Ordering::Relaxed);
                Ok(Value::String("".into()))
            }),
        );
        Ok(Renderer {
            data: Value::Map(root),
            funcs,
            budget,
        })
    }

    /// Renders `source` to bytes. Errors describe the failure without quoting a value.
    pub fn render(&self, source: &str) -> Result<Vec<u8>, String> {
        self.budget.reset();
        let template = self.compile(source)?;
        let mut out = CappedString::default();
        let result = template.execute_template_fmt(&mut out, ROOT_NAME, &self.data);
        match result {
            Ok(()) => Ok(uncarry_bytes(&out.text)),
            Err(_) if out.overflowed => Err(format!("output exceeds {MAX_OUTPUT_BYTES} bytes")),
            Err(e) => Err(self.budget.failure().unwrap_or_else(|| describe(&e))),
        }
    }

    /// Parses `source`, checks that every function it names exists (Go does this at parse
    /// time), and instruments it (see the module doc).
    fn compile(&self, source: &str) -> Result<Template, String> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(format!(
                "template is {} bytes, over the {MAX_TEMPLATE_BYTES}-byte limit",
                source.len()
            ));
        }
        let (mut body, defines) = Parser::new(source, "{{", "}}")
            .and_then(Parser::parse)
            .map_err(|e| e.to_string())?;
        instrument(&mut body);
        self.check_functions(&body)?;
        let mut template = Template::new(ROOT_NAME)
            .funcs(self.funcs.clone())
            .missing_key(MissingKey::Error)
            .max_range_iters(MAX_STEPS)
            .add_parse_tree(ROOT_NAME, body);
        let mut seen = std::collections::BTreeSet::new();
        for define in defines {
            if define.name == ROOT_NAME || !seen.insert(define.name.clone()) {
                return Err(format!(
                    "multiple definition of template {:?}",
                    define.name.as_str()
                ));
            }
            let mut body = define.body;
            instrument(&mut body);
            self.check_functions(&body)?;
            let pos = body.pos;
            body.nodes.insert(0, call_node(pos, ENTER_FN, None));
            body.nodes.push(call_node(pos, LEAVE_FN, None));
            template = template.add_parse_tree(&define.name, body);
        }
        Ok(template)
    }

    fn check_functions(&self, list: &ListNode) -> Result<(), String> {
        let mut missing = None;
        visit_identifiers(list, &mut |name, line| {
            if missing.is_none() && !self.funcs.contains_key(name) && !is_builtin(name) {
                missing = Some(format!("line {line}: function {name:?} not defined"));
            }
        });
        missing.map_or(Ok(()), Err)
    }
}

/// Go's builtins that we leave to gotmpl (those that allocate are replaced in [`funcs`]).
fn is_builtin(name: &str) -> bool {
    matches!(
        name,
        "and" | "or" | "not" | "eq" | "ne" | "lt" | "le" | "gt" | "ge" | "len" | "call"
    )
}

/// An action that calls the hidden function `name` (with `arg`) and prints nothing.
fn call_node(pos: Pos, name: &str, arg: Option<i64>) -> Node {
    let mut args = vec![Expr::Identifier(pos, SmolStr::new(name))];
    if let Some(n) = arg {
        args.push(Expr::Number(pos, Number::Int(n)));
    }
    Node::Action(gotmpl::parse::ActionNode {
        pos,
        pipe: PipeNode {
            pos,
            decl: Vec::new(),
            commands: vec![CommandNode { pos, args }],
            is_assign: false,
        },
    })
}

/// Puts a step charge (the list's length, at least 1) at the head of every list in the tree,
/// and makes Go's comparison builtins pay for their operands (see [`charge_comparisons`]).
fn instrument(list: &mut ListNode) {
    for node in &mut list.nodes {
        match node {
            Node::List(inner) => instrument(inner),
            Node::Action(a) => charge_comparisons(&mut a.pipe),
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                charge_comparisons(&mut b.pipe);
                instrument(&mut b.body);
                if let Some(e) = &mut b.else_body {
                    instrument(e);
                }
            }
            Node::Template(t) => {
                if let Some(p) = &mut t.pipe {
                    charge_comparisons(p);
                }
            }
            Node::Define(d) => instrument(&mut d.body),
            _ => {}
        }
    }
    let weight = list.nodes.len().max(1) as i64;
    list.nodes
        .insert(0, call_node(list.pos, STEP_FN, Some(weight)));
}

/// `eq`, `ne`, `lt`, `le`, `gt` and `ge` are gotmpl's, and cost up to the size of their
/// smallest operand (two 1 MiB strings equal but for the last byte): each explicit operand is
/// passed through the hidden [`CHARGE_FN`], which charges its size in steps and returns it.
fn charge_comparisons(pipe: &mut PipeNode) {
    for cmd in &mut pipe.commands {
        let compares = matches!(
            cmd.args.first(),
            Some(Expr::Identifier(_, name)) if matches!(name.as_str(), "eq" | "ne" | "lt" | "le" | "gt" | "ge")
        );
        for arg in cmd.args.iter_mut().skip(1) {
            if let Expr::Pipe(_, inner) = arg {
                charge_comparisons(inner);
            }
            if compares {
                let pos = arg.pos();
                let operand = std::mem::replace(arg, Expr::Nil(pos));
                *arg = Expr::Pipe(
                    pos,
                    PipeNode {
                        pos,
                        decl: Vec::new(),
                        commands: vec![CommandNode {
                            pos,
                            args: vec![Expr::Identifier(pos, SmolStr::new(CHARGE_FN)), operand],
                        }],
                        is_assign: false,
                    },
                );
            }
        }
    }
}

/// Calls `f(name, line)` for every function named in command position in the tree.
fn visit_identifiers(list: &ListNode, f: &mut dyn FnMut(&str, usize)) {
    fn pipe(p: &PipeNode, f: &mut dyn FnMut(&str, usize)) {
        for cmd in &p.commands {
            for arg in &cmd.args {
                expr(arg, f);
            }
        }
    }
    fn expr(e: &Expr, f: &mut dyn FnMut(&str, usize)) {
        match e {
            Expr::Identifier(pos, name) => f(name, pos.line),
            Expr::Pipe(_, p) => pipe(p, f),
            Expr::Chain(_, inner, _) => expr(inner, f),
            _ => {}
        }
    }
    for node in &list.nodes {
        match node {
            Node::List(inner) => visit_identifiers(inner, f),
            Node::Action(a) => pipe(&a.pipe, f),
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                pipe(&b.pipe, f);
                visit_identifiers(&b.body, f);
                if let Some(e) = &b.else_body {
                    visit_identifiers(e, f);
                }
            }
            Node::Template(t) => {
                if let Some(p) = &t.pipe {
                    pipe(p, f);
                }
            }
            Node::Define(d) => visit_identifiers(&d.body, f),
            _ => {}
        }
    }
}

/// An engine error without anything a value could have put there.
fn describe(e: &TemplateError) -> String {
    match e {
        TemplateError::Parse { .. } | TemplateError::Lex { .. } => e.to_string(),
        TemplateError::MissingKey { key } => format!("map has no entry for key {key:?}"),
        TemplateError::UndefinedTemplate(_)
        | TemplateError::UndefinedFunction(_)
        | TemplateError::UndefinedVariable(_)
        | TemplateError::ArgCount { .. }
        | TemplateError::TypeMismatch { .. }
        | TemplateError::NotIterable(_) => e.to_string(),
        TemplateError::RecursionLimit => "template calls or blocks nest too deep".into(),
        TemplateError::RangeIterLimit => {
            format!("exceeds {MAX_STEPS} steps (loops too long or nested, or recursive templates)")
        }
        TemplateError::IndexOutOfRange { .. } => "index out of range".into(),
        TemplateError::FuncPanic { name, .. } => format!("function {name} failed"),
        _ => "execution error (an operation on a value failed; its message is withheld because \
              it could quote the value)"
            .into(),
    }
}

/// The output of one template, refused past [`MAX_OUTPUT_BYTES`].
#[derive(Default)]
struct CappedString {
    text: String,
    overflowed: bool,
}

impl std::fmt::Write for CappedString {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.text.len() + s.len() > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(std::fmt::Error);
        }
        self.text.push_str(s);
        Ok(())
    }
}

impl Drop for CappedString {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.text);
    }
}

fn is_byte_carrier(c: char) -> bool {
    (BYTE_CARRIER_BASE + 0x80..=BYTE_CARRIER_BASE + 0xFF).contains(&(c as u32))
}

/// `bytes` as a string: UTF-8 runs as they are, each other byte as its carrier character.
pub(crate) fn carry_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push(char::from_u32(BYTE_CARRIER_BASE + u32::from(*b)).unwrap_or('\u{FFFD}'));
        }
    }
    out
}

/// The bytes a string carries: the inverse of [`carry_bytes`].
pub(crate) fn uncarry_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        if is_byte_carrier(c) {
            out.push((c as u32 - BYTE_CARRIER_BASE) as u8);
        } else {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_sprig;
