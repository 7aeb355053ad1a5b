//! Reading `runHuntingQuery`'s answer as it arrives: `{"schema": [{"name", "type"}], "results":
//! [{column: value, …}, …]}` (older answers spell `Name`/`Type`). Each row is handed on as soon
//! as it is parsed, exactly as Microsoft wrote it, so that 100,000 rows never sit in memory:
//! the body's chunks go into a parser on a blocking thread, rows come out of a small channel.

use std::io::Read;

use bytes::{Buf, Bytes};
use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks of the body waiting for the parser, and rows waiting for the writer: what bounds the
/// memory of one tenant's answer.
const CHUNKS_IN_FLIGHT: usize = 8;
const ROWS_IN_FLIGHT: usize = 256;

/// One column of the answer's schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Column {
    #[serde(alias = "Name")]
    pub name: String,
    #[serde(rename = "type", alias = "Type", default)]
    pub kind: String,
}

#[derive(Debug)]
pub enum AnswerItem {
    Schema(Vec<Column>),
    /// One row, as Microsoft wrote it.
    Row(Box<RawValue>),
}

/// Parses an answer from `reader`, calling `emit` for the schema and for each row in order.
/// `emit` may stop the parse by returning an error.
pub fn parse<R: Read>(
    reader: R,
    mut emit: impl FnMut(AnswerItem) -> Result<(), String>,
) -> Result<(), String> {
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let saw_results = deserializer
        .deserialize_map(AnswerVisitor { emit: &mut emit })
        .map_err(|error| error.to_string())?;
    deserializer.end().map_err(|error| error.to_string())?;
    if saw_results {
        Ok(())
    } else {
        Err("the answer has no results".into())
    }
}

struct AnswerVisitor<'a, F> {
    emit: &'a mut F,
}

impl<'de, F: FnMut(AnswerItem) -> Result<(), String>> Visitor<'de> for AnswerVisitor<'_, F> {
    type Value = bool;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a hunting answer object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut saw_results = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "schema" | "Schema" => {
                    let columns: Option<Vec<Column>> = map.next_value()?;
                    (self.emit)(AnswerItem::Schema(columns.unwrap_or_default()))
                        .map_err(de::Error::custom)?;
                }
                "results" | "Results" => {
                    map.next_value_seed(RowsSeed {
                        emit: &mut *self.emit,
                    })?;
                    saw_results = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(saw_results)
    }
}

struct RowsSeed<'a, F> {
    emit: &'a mut F,
}

impl<'de, F: FnMut(AnswerItem) -> Result<(), String>> DeserializeSeed<'de> for RowsSeed<'_, F> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, F: FnMut(AnswerItem) -> Result<(), String>> Visitor<'de> for RowsSeed<'_, F> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an array of rows")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut rows: A) -> Result<(), A::Error> {
        while let Some(row) = rows.next_element::<Box<RawValue>>()? {
            (self.emit)(AnswerItem::Row(row)).map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

/// A blocking reader over chunks sent from async code; a transport failure is an I/O error.
struct ChunkReader {
    chunks: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while !self.current.has_remaining() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(std::io::Error::other(error)),
                None => return Ok(0),
            }
        }
        let length = buffer.len().min(self.current.remaining());
        self.current.copy_to_slice(&mut buffer[..length]);
        Ok(length)
    }
}

/// An answer being parsed: its items arrive on `items`; `finish` tells how the parse ended.
pub struct AnswerStream {
    pub items: mpsc::Receiver<AnswerItem>,
    parser: JoinHandle<Result<(), String>>,
    feeder: Option<JoinHandle<()>>,
}

impl AnswerStream {
    /// Parses the chunks sent on the returned sender (an `Err` chunk is a transport failure).
    pub fn from_chunks() -> (mpsc::Sender<Result<Bytes, String>>, AnswerStream) {
        let (chunk_sender, chunks) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let (item_sender, items) = mpsc::channel(ROWS_IN_FLIGHT);
        let parser = tokio::task::spawn_blocking(move || {
            let reader = std::io::BufReader::with_capacity(
                64 * 1024,
                ChunkReader {
                    chunks,
                    current: Bytes::new(),
                },
            );
            parse(reader, |item| {
                item_sender
                    .blocking_send(item)
                    .map_err(|_| "the writer stopped reading".to_owned())
            })
        });
        (
            chunk_sender,
            AnswerStream {
                items,
                parser,
                feeder: None,
            },
        )
    }

    /// Parses an HTTP answer's body as it downloads.
    pub fn from_response(mut response: reqwest::Response) -> AnswerStream {
        let (sender, mut stream) = AnswerStream::from_chunks();
        stream.feeder = Some(tokio::spawn(async move {
            loop {
                let chunk = match response.chunk().await {
                    Ok(Some(chunk)) => Ok(chunk),
                    Ok(None) => return,
                    Err(error) => Err(crate::http::describe_transport_error(&error)),
                };
                let failed = chunk.is_err();
                // The parser gone (it failed, or the writer stopped): nothing more to read.
                if sender.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        }));
        stream
    }

    /// How the parse ended, after every item was taken (or the receiver dropped).
    pub async fn finish(self) -> Result<(), String> {
        drop(self.items);
        if let Some(feeder) = self.feeder {
            feeder.abort();
        }
        self.parser
            .await
            .map_err(|error| format!("the answer's parser failed: {error}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(body: &str) -> Result<(Vec<Column>, Vec<String>), String> {
        let mut schema = Vec::new();
        let mut rows = Vec::new();
        parse(body.as_bytes(), |item| {
            match item {
                AnswerItem::Schema(columns) => schema = columns,
                AnswerItem::Row(row) => rows.push(row.get().to_owned()),
            }
            Ok(())
        })?;
        Ok((schema, rows))
    }

    #[test]
    fn rows_come_out_as_microsoft_wrote_them_with_either_schema_spelling() {
        let body = r#"{"@odata.context":"x","schema":[{"name":"Timestamp","type":"DateTime"},{"name":"DeviceName","type":"String"}],
            "results":[{"Timestamp":"2026-12-01T00:00:00Z","DeviceName":"pc-1"},{"DeviceName":"pc-2","Timestamp":"2026-12-02T00:00:00Z"}]}"#;
        let (schema, rows) = items(body).unwrap();
        assert_eq!(
            schema,
            vec![
                Column {
                    name: "Timestamp".into(),
                    kind: "DateTime".into()
                },
                Column {
                    name: "DeviceName".into(),
                    kind: "String".into()
                }
            ]
        );
        assert_eq!(
            rows,
            vec![
                r#"{"Timestamp":"2026-12-01T00:00:00Z","DeviceName":"pc-1"}"#,
                r#"{"DeviceName":"pc-2","Timestamp":"2026-12-02T00:00:00Z"}"#
            ],
            "column order and values untouched"
        );
        let legacy = r#"{"Results":[],"Schema":[{"Name":"A","Type":"Int64"}]}"#;
        let (schema, rows) = items(legacy).unwrap();
        assert_eq!(schema[0].name, "A");
        assert_eq!(schema[0].kind, "Int64");
        assert!(rows.is_empty());
    }

    #[test]
    fn a_cut_or_malformed_answer_is_an_error_not_a_short_result() {
        assert!(items(r#"{"schema":[],"results":[{"a":1},"#).is_err());
        assert!(items(r#"{"schema":[]}"#).is_err(), "no results at all");
        assert!(items(r#"[1,2]"#).is_err());
        assert!(items(r#"{"results":[]} trailing"#).is_err());
    }

    #[test]
    fn the_consumer_can_stop_the_parse() {
        let body = r#"{"results":[{"a":1},{"a":2},{"a":3}]}"#;
        let mut seen = 0;
        let result = parse(body.as_bytes(), |_| {
            seen += 1;
            if seen == 2 {
                Err("enough".into())
            } else {
                Ok(())
            }
        });
        assert!(result.unwrap_err().contains("enough"));
        assert_eq!(seen, 2);
    }

    #[tokio::test]
    async fn chunks_split_anywhere_parse_the_same_and_a_transport_failure_surfaces() {
        let body =
            br#"{"schema":[{"name":"a","type":"Int64"}],"results":[{"a":1},{"a":22},{"a":333}]}"#;
        for split in [1, 3, 7, 40] {
            let (sender, mut stream) = AnswerStream::from_chunks();
            let chunks: Vec<Bytes> = body.chunks(split).map(Bytes::copy_from_slice).collect();
            tokio::spawn(async move {
                for chunk in chunks {
                    sender.send(Ok(chunk)).await.unwrap();
                }
            });
            let mut rows = Vec::new();
            while let Some(item) = stream.items.recv().await {
                if let AnswerItem::Row(row) = item {
                    rows.push(row.get().to_owned());
                }
            }
            stream.finish().await.unwrap();
            assert_eq!(rows, vec![r#"{"a":1}"#, r#"{"a":22}"#, r#"{"a":333}"#]);
        }
        let (sender, mut stream) = AnswerStream::from_chunks();
        tokio::spawn(async move {
            sender
                .send(Ok(Bytes::from_static(br#"{"results":[{"a":1},"#)))
                .await
                .unwrap();
            sender.send(Err("connection reset".into())).await.unwrap();
        });
        while stream.items.recv().await.is_some() {}
        let error = stream.finish().await.unwrap_err();
        assert!(error.contains("connection reset"), "{error}");
    }
}
