//! A MOCK of Google Cloud Storage's XML API, in memory, on loopback: no GCS emulator can run
//! here, so this stands in for one to check that a `gcs` repository is wired to the store the
//! way `object_store` speaks to GCS (objects, listings, multipart uploads). It holds no
//! promise of GCS's own behaviour beyond what the tests ask of it. Stops with the test.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};

#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Object>,
    uploads: HashMap<String, (String, BTreeMap<u32, Bytes>)>,
    generation: u64,
}

struct Object {
    content: Bytes,
    modified: jiff::Timestamp,
    generation: u64,
}

pub struct GcsMock {
    /// The base URL to give the client (`http://127.0.0.1:<port>`).
    pub url: String,
    pub bucket: String,
    store: Arc<Mutex<Store>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl GcsMock {
    /// Serve `bucket` on a free loopback port, from a thread of its own: the test's own
    /// runtime may block on the processes it runs, and those processes talk to this.
    pub async fn start(bucket: &str) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", std_listener.local_addr().unwrap());
        let store = Arc::new(Mutex::new(Store::default()));
        let (shared, name) = (store.clone(), bucket.to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                // Parts are up to 16 MiB: no body limit.
                let app = axum::Router::new()
                    .fallback(
                        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                            let (store, bucket) = (shared.clone(), name.clone());
                            async move { answer(&store, &bucket, method, uri, headers, body) }
                        },
                    )
                    .layer(axum::extract::DefaultBodyLimit::disable());
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self {
            url,
            bucket: bucket.to_string(),
            store,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// The keys it holds, in order.
    pub fn keys(&self) -> Vec<String> {
        self.store.lock().unwrap().objects.keys().cloned().collect()
    }
}

impl Drop for GcsMock {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

fn xml(body: String) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/xml")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>{body}"),
    )
        .into_response()
}

fn etag(generation: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{generation:x}\"")).unwrap()
}

fn answer(
    store: &Mutex<Store>,
    bucket: &str,
    method: Method,
    uri: Uri,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_start_matches('/');
    let (in_bucket, key) = match path.split_once('/') {
        Some((b, key)) => (b, decode(key)),
        None => (path, String::new()),
    };
    if in_bucket != bucket {
        return StatusCode::NOT_FOUND.into_response();
    }
    let query = query(&uri);
    let mut store = store.lock().unwrap();
    if key.is_empty() && method == Method::GET {
        // ListObjectsV2, every page at once.
        let prefix = query.get("prefix").cloned().unwrap_or_default();
        let contents: String = store
            .objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, o)| {
                format!(
                    "<Contents><Key>{k}</Key><Size>{}</Size><LastModified>{}</LastModified><ETag>\"{:x}\"</ETag></Contents>",
                    o.content.len(),
                    o.modified.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    o.generation
                )
            })
            .collect();
        return xml(format!(
            "<ListBucketResult><Name>{bucket}</Name><Prefix>{prefix}</Prefix>{contents}</ListBucketResult>"
        ));
    }
    store.generation += 1;
    let generation = store.generation;
    match (method, query.get("uploadId"), query.contains_key("uploads")) {
        (Method::POST, None, true) => {
            let id = format!("upload-{generation}");
            store
                .uploads
                .insert(id.clone(), (key.clone(), BTreeMap::new()));
            xml(format!(
                "<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>"
            ))
        }
        (Method::PUT, Some(id), _) => {
            let number: u32 = query
                .get("partNumber")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let Some((_, parts)) = store.uploads.get_mut(id) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            parts.insert(number, body);
            let mut response = StatusCode::OK.into_response();
            response.headers_mut().insert("etag", etag(generation));
            response
        }
        (Method::POST, Some(id), _) => {
            let Some((key, parts)) = store.uploads.remove(id) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let content: Vec<u8> = parts.values().flat_map(|p| p.iter().copied()).collect();
            store.objects.insert(
                key.clone(),
                Object {
                    content: Bytes::from(content),
                    modified: jiff::Timestamp::now(),
                    generation,
                },
            );
            let mut response = xml(format!(
                "<CompleteMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key><ETag>\"{generation:x}\"</ETag></CompleteMultipartUploadResult>"
            ));
            response.headers_mut().insert(
                "x-goog-generation",
                HeaderValue::from_str(&generation.to_string()).unwrap(),
            );
            response
        }
        (Method::DELETE, Some(id), _) => {
            store.uploads.remove(id);
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::PUT, None, _) => {
            store.objects.insert(
                key,
                Object {
                    content: body,
                    modified: jiff::Timestamp::now(),
                    generation,
                },
            );
            let mut response = StatusCode::OK.into_response();
            response.headers_mut().insert("etag", etag(generation));
            response.headers_mut().insert(
                "x-goog-generation",
                HeaderValue::from_str(&generation.to_string()).unwrap(),
            );
            response
        }
        (Method::DELETE, None, _) => match store.objects.remove(&key) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        (method @ (Method::GET | Method::HEAD), None, _) => {
            let Some(object) = store.objects.get(&key) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let body = if method == Method::HEAD {
                Bytes::new()
            } else {
                object.content.clone()
            };
            let mut response = (StatusCode::OK, body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                "content-length",
                HeaderValue::from_str(&object.content.len().to_string()).unwrap(),
            );
            headers.insert("etag", etag(object.generation));
            headers.insert(
                "last-modified",
                HeaderValue::from_str(
                    &object
                        .modified
                        .strftime("%a, %d %b %Y %H:%M:%S GMT")
                        .to_string(),
                )
                .unwrap(),
            );
            headers.insert(
                "x-goog-generation",
                HeaderValue::from_str(&object.generation.to_string()).unwrap(),
            );
            response
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}
