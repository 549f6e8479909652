//! Paged answers (`ps`, `query`, `findings`): every page is fetched and
//! printed as it arrives, so the CLI holds one page, never the fleet.
//! `-o json` prints exactly the bytes the whole answer would print at
//! once ([`render::json_text`]): the document's other fields come from the
//! first page, and the array's elements are written page by page in the
//! pretty printer's layout.

use std::io::Write;

use serde_json::Value;

use crate::render;

/// Where paged output goes: stdout, until the reader goes away (`| head`
/// is not an error; it only stops the fetching).
pub struct Sink {
    out: Box<dyn Write>,
    closed: bool,
}

impl Sink {
    pub fn stdout() -> Sink {
        Sink {
            out: Box::new(std::io::stdout()),
            closed: false,
        }
    }

    /// Writes `text`; false once the reader is gone.
    pub fn write(&mut self, text: &str) -> anyhow::Result<bool> {
        if self.closed {
            return Ok(false);
        }
        let out = &mut self.out;
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A JSON document whose `key` array is written element by element.
pub struct JsonArray {
    suffix: String,
    written: usize,
}

impl JsonArray {
    /// Writes the document up to the array's first element: `head` is the
    /// whole document with `key` an empty array.
    pub fn begin(sink: &mut Sink, head: &Value, key: &str) -> anyhow::Result<JsonArray> {
        let text = render::json_text(head)?;
        let marker = format!("\n  {}: []", serde_json::to_string(key)?);
        let at = text
            .find(&marker)
            .ok_or_else(|| anyhow::anyhow!("no {key} array in the document"))?;
        let open = at + marker.len() - 1;
        sink.write(&text[..open])?;
        Ok(JsonArray {
            suffix: text[open + 1..].to_string(),
            written: 0,
        })
    }

    /// Writes one page's elements.
    pub fn push(&mut self, sink: &mut Sink, items: Vec<Value>) -> anyhow::Result<bool> {
        let mut text = String::new();
        for item in items {
            text.push_str(if self.written == 0 {
                "\n    "
            } else {
                ",\n    "
            });
            text.push_str(&serde_json::to_string_pretty(&item)?.replace('\n', "\n    "));
            self.written += 1;
        }
        sink.write(&text)
    }

    pub fn finish(self, sink: &mut Sink) -> anyhow::Result<bool> {
        let close = if self.written == 0 { "]" } else { "\n  ]" };
        sink.write(&format!("{close}{}", self.suffix))
    }
}

/// Takes the `key` array out of a rendered page.
pub fn take_array(doc: &mut Value, key: &str) -> Vec<Value> {
    match doc.get_mut(key).map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The streamed bytes are the whole document's, for any split into
    /// pages, with awkward strings and nested empty arrays.
    #[test]
    fn streamed_json_is_the_whole_documents() {
        let items: Vec<Value> = (0..5)
            .map(|i| {
                json!({"pid": i, "cmdline": format!("a\n\"b\"\t{i}"), "paths": [], "nested": {"x": [1, {"y": []}]}})
            })
            .collect();
        for key in ["findings", "processes", "matches"] {
            let whole = json!({"advisories_evaluated": 3, "coverage": {"hosts": []}, key: items.clone(), "query": "q", "zz": null});
            let expected = render::json_text(&whole).unwrap();
            for split in [vec![], vec![5], vec![1, 4], vec![2, 2, 1], vec![0, 5, 0]] {
                let mut head = whole.clone();
                head[key] = json!([]);
                let (mut sink, path) = file_sink();
                let mut arr = JsonArray::begin(&mut sink, &head, key).unwrap();
                let mut at = 0;
                for n in &split {
                    arr.push(&mut sink, items[at..at + n].to_vec()).unwrap();
                    at += n;
                }
                arr.finish(&mut sink).unwrap();
                let got = sink.into_string(&path);
                let want = if split.iter().sum::<usize>() == 5 {
                    expected.clone()
                } else {
                    render::json_text(&head).unwrap()
                };
                assert_eq!(got, want, "{key} split {split:?}");
            }
        }
    }

    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn file_sink() -> (Sink, Buffer) {
        let buf = Buffer::default();
        (
            Sink {
                out: Box::new(buf.clone()),
                closed: false,
            },
            buf,
        )
    }

    impl Sink {
        fn into_string(self, buf: &Buffer) -> String {
            drop(self);
            String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
        }
    }
}
