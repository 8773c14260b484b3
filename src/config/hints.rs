//! Guesses at what the operator meant, for `check`'s messages. Pure: text
//! in, advice out.
//!
//! Values are taken literally (a `#` or a quote inside a value is part of
//! it), so a habit from another format (an inline comment, quoting, a
//! comma list) silently changes a value or makes it invalid. These
//! functions only recognise the habit and name it; they never show the
//! value, which may be a VRRP password.

/// A value that looks written for another syntax, and what to say about it.
/// `None` when it looks like a plain value.
pub fn value_habit(key: &str, value: &str, list_key: bool) -> Option<String> {
    let bytes = value.as_bytes();
    if bytes.len() >= 2 && matches!(bytes[0], b'"' | b'\'') && bytes[bytes.len() - 1] == bytes[0] {
        return Some("values are written bare: quotes are not needed and would be part of the value".to_owned());
    }
    if has_inline_comment(value) {
        return Some(
            "did you mean a comment? comments are whole lines starting with '#' or ';': a '#' or ';' after a \
             value is part of it"
                .to_owned(),
        );
    }
    if list_key && value.contains(',') {
        return Some(format!("did you mean a list? one item per line: repeat '{key} =' for each"));
    }
    None
}

/// A `#` or `;` after whitespace: how an inline comment starts in the
/// formats operators carry habits from (shell, l3_agent.ini's oslo.config).
fn has_inline_comment(value: &str) -> bool {
    value.as_bytes().windows(2).any(|w| w[0].is_ascii_whitespace() && matches!(w[1], b'#' | b';'))
}

/// The known keys closest to `key`, for "did you mean": those at the
/// smallest edit distance, if that distance is small for the key's length
/// (at most 1 for keys up to 4 characters, 2 up to 8, else 3). Case is
/// ignored, so `Priority` finds `priority`.
pub fn closest<'k>(key: &str, known: &[&'k str]) -> Vec<&'k str> {
    let key = key.to_ascii_lowercase();
    let limit = match key.chars().count() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    let scored: Vec<(usize, &'k str)> = known.iter().map(|k| (edit_distance(&key, k), *k)).collect();
    match scored.iter().map(|(d, _)| *d).min() {
        Some(best) if best <= limit => scored.into_iter().filter(|(d, _)| *d == best).map(|(_, k)| k).collect(),
        _ => Vec::new(),
    }
}

/// Insertions, deletions, substitutions and swaps of two neighbours, each
/// costing 1 (optimal string alignment): `priorty` is 1 from `priority`,
/// `vird` 1 from `vrid`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// `'a'`, `'a' or 'b'`, `'a', 'b' or 'c'`.
pub fn quoted_alternatives(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("'{k}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}
