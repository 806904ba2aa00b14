//! AFL++ target: one input is a prompt (UTF-8), run through
//! - the prompt syntax (`generate::prompt::parse`: emphasis `(x)` `[x]`
//!   `(x:1.5)`, escapes, `BREAK`): neighbours never share a weight, no text
//!   is invented, a prompt without syntax is itself, and any text escaped and
//!   wrapped in brackets parses back to exactly that text with the bracket's
//!   weight;
//! - the pseudo-word scan and DreamArtist's automatic negative
//!   (`conditioning::words_in`, `auto_negative`);
//! - the CLIP tokenizer's pieces with pseudo-word slots, and the 75-token
//!   chunking (`conditioning::chunk_prompt`) with the real CLIP vocabulary of
//!   the tiny test model (built once per process): every chunk is framed to
//!   the tokenizer's length with one weight per position, chunks hold exactly
//!   the prompt's pieces in order (none lost, none invented), and a word's
//!   slots stay together in one chunk.
//!
//! Words get 1–3 vectors, and now and then none or more than a chunk holds
//! (an imported embedding can have any number): `prepare` refuses those
//! before chunking (1 to `MAX_WORD_VECTORS`); chunking them anyway must not
//! panic.
//!
//! Any panic, abort, hang or broken invariant is a finding.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use dreamartist::generate::conditioning::{
    auto_negative, chunk_prompt, words_in, Chunk, MAX_WORD_VECTORS,
};
use dreamartist::generate::prompt::{parse, Fragment};
use dreamartist::generate::WordBank;
use dreamartist::sd::{ClipTokenizer, Piece, PseudoWord};

/// The prompt syntax's escapes: `text` written so that it reads as itself.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '(' | ')' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `text` ends in what reads as a weight before a `)`: its last `:`,
/// spaces, a sign, digits and dots that parse as a number, spaces (`(a:1)`
/// weighs `a` by 1: the syntax has no escape for `:`). The spaces are the
/// ASCII ones `char::is_whitespace` takes, vertical tab included.
fn ends_like_weight(text: &str) -> bool {
    let Some((_, tail)) = text.rsplit_once(':') else {
        return false;
    };
    let number = tail.trim_matches(|c: char| matches!(c, '\t'..='\r' | ' '));
    let digits = number.strip_prefix(['+', '-']).unwrap_or(number);
    !digits.is_empty()
        && digits.chars().all(|c| c == '.' || c.is_ascii_digit())
        && number.parse::<f64>().is_ok()
}

fn check_syntax(prompt: &str, fragments: &[Fragment]) {
    assert!(!fragments.is_empty(), "no fragment");
    let mut text_len = 0;
    for pair in fragments.windows(2) {
        if let [Fragment::Text { weight: a, .. }, Fragment::Text { weight: b, .. }] = pair {
            assert!(a != b, "neighbours of one weight: {pair:?}");
        }
    }
    for f in fragments {
        if let Fragment::Text { text, weight } = f {
            text_len += text.len();
            if !prompt.contains(':') {
                assert!(!weight.is_nan(), "a NaN weight without a `:`");
            }
        }
    }
    assert!(text_len <= prompt.len(), "parse invented text");
    let syntax = prompt.contains(['\\', '(', ')', '[', ']', ':']) || prompt.contains("BREAK");
    if !syntax {
        assert_eq!(
            fragments,
            [Fragment::Text {
                text: prompt.to_string(),
                weight: 1.0
            }],
            "a prompt without syntax"
        );
    }
    // Escaped text reads back as itself, at the weight of its brackets.
    if !prompt.contains("BREAK") {
        let e = escape(prompt);
        let empty = prompt.is_empty();
        let mut cases = vec![
            (e.clone(), 1.0),
            (format!("[{e}]"), 1.0 / 1.1),
            (format!("({e}:0.25)"), 0.25),
        ];
        if !ends_like_weight(prompt) {
            cases.push((format!("({e})"), 1.1));
        }
        for (written, weight) in cases {
            let want = [Fragment::Text {
                text: prompt.to_string(),
                weight: if empty { 1.0 } else { weight },
            }];
            assert_eq!(parse(&written), want, "escaped as {written:?}");
        }
    }
}

/// Chunks' pieces without the framing (BOS, EOS, padding).
fn content(chunks: &[Chunk], tok: &ClipTokenizer) -> Vec<Piece> {
    chunks
        .iter()
        .flat_map(|c| c.pieces.iter().copied())
        .filter(|p| !special(p, tok))
        .collect()
}

fn special(p: &Piece, tok: &ClipTokenizer) -> bool {
    matches!(p, Piece::Token(t) if [tok.bos, tok.eos, tok.pad].contains(t))
}

fn check_chunks(tok: &ClipTokenizer, prompt: &str, words: &[PseudoWord], fragments: &[Fragment]) {
    let chunks = chunk_prompt(tok, prompt, words);
    assert!(!chunks.is_empty(), "no chunk");
    let total: usize = words.iter().map(|w| w.vectors).sum();
    for c in &chunks {
        assert_eq!(c.pieces.len(), tok.max_len, "a chunk of the wrong length");
        assert_eq!(
            c.weights.len(),
            c.pieces.len(),
            "weights do not match pieces"
        );
        assert_eq!(c.pieces[0], Piece::Token(tok.bos), "a chunk without BOS");
        for p in &c.pieces {
            if let Piece::Slot(s) = p {
                assert!(*s < total, "slot {s} of {total}");
            }
        }
    }
    // Nothing lost, nothing invented, in order.
    let want: Vec<Piece> = fragments
        .iter()
        .filter_map(|f| match f {
            Fragment::Text { text, .. } => Some(tok.pieces(text, words)),
            Fragment::Break => None,
        })
        .flatten()
        .filter(|p| !special(p, tok))
        .collect();
    assert!(
        content(&chunks, tok) == want,
        "the chunks do not hold the prompt's pieces"
    );
    // A word's slots never straddle two chunks.
    let mut start = 0;
    for w in words {
        let range = start..start + w.vectors;
        start += w.vectors;
        if w.vectors == 0 {
            continue;
        }
        for c in &chunks {
            for (i, _) in c
                .pieces
                .iter()
                .enumerate()
                .filter(|(_, p)| **p == Piece::Slot(range.start))
            {
                let run: Vec<Piece> = range.clone().map(Piece::Slot).collect();
                assert!(
                    c.pieces[i..].starts_with(&run),
                    "word {} is split across chunks",
                    w.name
                );
            }
        }
    }
}

fn main() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-sd1/model/tokenizer");
    let tok = ClipTokenizer::from_dir(&dir).expect("the tiny model's tokenizer");
    afl::fuzz!(|data: &[u8]| {
        let Ok(prompt) = std::str::from_utf8(data) else {
            return;
        };
        let one = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).expect("a tensor");
        let fragments = parse(prompt);
        check_syntax(prompt, &fragments);
        // The pseudo-words it names; every other one has a `-neg` in the bank.
        let mut words: Vec<PseudoWord> = Vec::new();
        let mut bank = WordBank::new();
        for (i, w) in words_in(prompt).into_iter().enumerate() {
            assert!(prompt.contains(&w), "words_in invented {w}");
            if words.iter().any(|p| p.name == w) {
                continue;
            }
            if i % 2 == 0 {
                let stem = w.trim_start_matches('<').trim_end_matches('>');
                bank.insert(&format!("{stem}-neg"), one.clone(), "fuzz");
            }
            bank.insert(&w, one.clone(), "fuzz");
            // `<long-names...>` (12+ characters) are words of many vectors.
            let vectors = match w.len() {
                14.. => 60 + w.len() % 20,
                n if n % 7 == 0 => 0,
                n => 1 + n % 3,
            };
            words.push(PseudoWord { vectors, name: w });
        }
        let negative = auto_negative(prompt, "", &bank);
        for n in words_in(&negative) {
            assert!(n.ends_with("-neg>"), "auto_negative added {n}");
        }
        // Idempotent: the words it added are present the second time.
        assert_eq!(auto_negative(prompt, &negative, &bank), negative);
        let _ = auto_negative(prompt, prompt, &bank);
        if words
            .iter()
            .all(|w| (1..=MAX_WORD_VECTORS).contains(&w.vectors))
        {
            check_chunks(&tok, prompt, &words, &fragments);
        } else {
            drop(chunk_prompt(&tok, prompt, &words));
        }
    });
}
