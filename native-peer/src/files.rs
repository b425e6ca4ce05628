//! Sending and receiving files, each on its own `burrow-file` data channel (framing in
//! `peer_core::channels`, checks in `peer_core::transfer`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use indicatif::{ProgressBar, ProgressStyle};
use peer_core::channels::{FileMessage, FILE_LABEL};
use peer_core::transfer::{Incoming, Outgoing, TransferError, CHUNK_SIZE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::PeerConnection;

/// A finished transfer, as reported to the user.
#[derive(Debug, Clone)]
pub struct Done {
    /// The file's name.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: String,
    /// Where it was saved (receiving side).
    pub path: Option<PathBuf>,
}

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading or writing the local file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The data channel failed or closed.
    #[error("the connection closed before the transfer finished")]
    Channel,
    /// The bytes did not check out.
    #[error("{0}")]
    Check(TransferError),
    /// The receiver refused the file.
    #[error("the receiver refused it: {0}")]
    Refused(String),
    /// The sender sent nothing for [`STALL_WAIT`]: given up, its part file removed.
    #[error("nothing arrived for {} s: given up", STALL_WAIT.as_secs())]
    Stalled,
}

/// A transfer that carries nothing for this long is given up (it would hold a descriptor and
/// a buffer for ever).
pub const STALL_WAIT: Duration = Duration::from_secs(60);

/// Files received at once by this process, whoever sends them: each holds a descriptor and a
/// 1 MiB buffer until it is done.
pub const MAX_FILES_IN_ALL: usize = 64;

/// How many files are being received at once, per sending client and in all: no peer can make
/// us hold more descriptors and buffers than that, nor take the places of others. Clients are
/// counted by the server's tag of their address (see `signal_protocol::PeerInfo::client`), so
/// a rejoin under a new id brings no new places.
pub struct Intake {
    per_client: usize,
    /// The largest file accepted (`--max-file-size`); none: as much as the disk has free.
    max_file: Option<u64>,
    open: Mutex<HashMap<String, usize>>,
}

/// A place in the [`Intake`], given back when dropped.
pub struct Place {
    intake: Arc<Intake>,
    client: String,
}

impl Intake {
    /// At most `per_client` files at once from one client (and [`MAX_FILES_IN_ALL`] in all),
    /// each at most `max_file` bytes.
    pub fn new(per_client: usize, max_file: Option<u64>) -> Arc<Intake> {
        Arc::new(Intake {
            per_client,
            max_file,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more file from `client`, or why not (told to the sender).
    pub fn admit(self: &Arc<Self>, client: &str) -> Result<Place, String> {
        // Never held across an await: a few map operations.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.values().sum::<usize>() >= MAX_FILES_IN_ALL {
            return Err(format!(
                "too many files arriving here at once (at most {MAX_FILES_IN_ALL}); send it later"
            ));
        }
        let n = open.entry(client.to_string()).or_insert(0);
        if *n >= self.per_client {
            return Err(format!(
                "too many files at once from this peer (at most {}); send it once one is done",
                self.per_client
            ));
        }
        *n += 1;
        Ok(Place {
            intake: self.clone(),
            client: client.to_string(),
        })
    }
}

impl Place {
    /// Why a file of `size` announced bytes is refused here up front, if it is: over
    /// `--max-file-size`, or over the disk's free space in `dir`.
    fn refuses(&self, size: u64, dir: &Path) -> Option<String> {
        if let Some(max) = self.intake.max_file.filter(|max| size > *max) {
            return Some(format!(
                "too large: this peer accepts files up to {} ({} announced)",
                indicatif::HumanBytes(max),
                indicatif::HumanBytes(size)
            ));
        }
        free_space(dir).filter(|free| size > *free).map(|free| {
            format!(
                "not enough free disk space here ({} announced, {} free)",
                indicatif::HumanBytes(size),
                indicatif::HumanBytes(free)
            )
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self
            .intake
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

impl From<TransferError> for FileError {
    /// A refusal is the receiver's choice, not a broken transfer (it is counted apart).
    fn from(e: TransferError) -> FileError {
        match e {
            TransferError::Refused(reason) => FileError::Refused(reason),
            other => FileError::Check(other),
        }
    }
}

impl From<webrtc::error::Error> for FileError {
    fn from(_: webrtc::error::Error) -> FileError {
        FileError::Channel
    }
}

/// A progress bar on stderr, hidden in `--json` mode.
pub fn progress(total: u64, what: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Reads the text messages of a channel in the background (a channel must always be polled).
fn text_messages(dc: Arc<dyn DataChannel>) -> mpsc::Receiver<Option<String>> {
    // Bounded: a peer sending text after text waits on its channel instead of filling memory.
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(event) = dc.poll().await {
            match event {
                DataChannelEvent::OnOpen => {
                    let _ = tx.send(None).await;
                }
                DataChannelEvent::OnMessage(m) if m.is_string => {
                    let _ = tx
                        .send(Some(String::from_utf8_lossy(&m.data).into_owned()))
                        .await;
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
    rx
}

/// Sends one file to the peer on a new channel and waits for its hash confirmation.
pub async fn send(
    pc: Arc<dyn PeerConnection>,
    own: &crate::own::OwnChannels,
    path: &Path,
    bar: ProgressBar,
) -> Result<Done, FileError> {
    let mut file = tokio::fs::File::open(path).await?;
    let size = file.metadata().await?.len();
    let (mut out, header) = Outgoing::start(&path.to_string_lossy(), size, None);
    let dc = own.create(&pc, FILE_LABEL).await?;
    let result = send_on(&dc, &mut file, &mut out, header, bar).await;
    // On every outcome: a receiver must not wait for bytes that will never come.
    let _ = dc.close().await;
    let verdict = result?;
    Ok(Done {
        name: out.name().to_string(),
        size,
        sha256: out.on_reply(&verdict)?,
        path: None,
    })
}

/// Sends the header, the bytes and the end on `dc`; returns the receiver's reply.
async fn send_on(
    dc: &Arc<dyn DataChannel>,
    file: &mut tokio::fs::File,
    out: &mut Outgoing,
    header: FileMessage,
    bar: ProgressBar,
) -> Result<String, FileError> {
    let mut inbox = text_messages(dc.clone());
    // Wait for the channel to open (a `None` from the reader, or its state).
    let open_event = async {
        loop {
            match inbox.recv().await {
                Some(None) => return true,
                Some(Some(_)) => continue,
                None => return false,
            }
        }
    };
    if !crate::own::opened(dc, open_event).await {
        return Err(FileError::Channel);
    }
    dc.send_text(&header.encode()).await?;
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        let n = read_full(file, &mut buf).await?;
        if n == 0 {
            break;
        }
        out.on_chunk(&buf[..n])?;
        // Waits while the channel's send buffer is full: memory stays bounded.
        dc.send(BytesMut::from(&buf[..n])).await?;
        bar.inc(n as u64);
        // The receiver may refuse before the end (no room, no write): stop at once.
        if let Ok(Some(text)) = inbox.try_recv() {
            bar.finish_and_clear();
            return Ok(text);
        }
    }
    dc.send_text(&out.end()?.encode()).await?;
    bar.finish_and_clear();
    loop {
        match inbox.recv().await {
            Some(Some(text)) => return Ok(text),
            Some(None) => continue,
            None => return Err(FileError::Channel),
        }
    }
}

/// Fills `buf` as far as the file allows; returns the bytes read (0 at the end).
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Receives one file from an incoming channel into `dir`: written to a hidden `.part` file,
/// checked, then renamed; on any failure the part file is removed. `place` is its place in the
/// [`Intake`] (held until it is done), or why it has none: then it is refused at its header.
pub async fn receive(
    dc: Arc<dyn DataChannel>,
    dir: Option<PathBuf>,
    place: Result<Place, String>,
    hidden_progress: bool,
) -> Result<Done, (String, FileError)> {
    let mut incoming: Option<(Incoming, tokio::io::BufWriter<tokio::fs::File>, PartFile)> = None;
    let mut bar = ProgressBar::hidden();
    let mut name = String::from("(unnamed file)");
    let result = async {
        loop {
            let event = match tokio::time::timeout(STALL_WAIT, dc.poll()).await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(_) => return Err(FileError::Stalled),
            };
            let DataChannelEvent::OnMessage(msg) = event else {
                if matches!(event, DataChannelEvent::OnClose) {
                    break;
                }
                continue;
            };
            if !msg.is_string {
                let Some((file, out, _)) = incoming.as_mut() else {
                    return Err(FileError::Check(TransferError::NoHeader));
                };
                file.on_chunk(&msg.data)?;
                if let Err(e) = out.write_all(&msg.data).await {
                    // The disk filled up after all (or failed): the sender hears why.
                    refuse(&dc, format!("cannot write the file here: {e}")).await;
                    return Err(e.into());
                }
                bar.set_position(file.received());
                continue;
            }
            let text = String::from_utf8_lossy(&msg.data);
            let message = FileMessage::decode(&text)
                .map_err(|_| FileError::Check(TransferError::NoHeader))?;
            match incoming.take() {
                None => {
                    let file = Incoming::start(&message)?;
                    name = file.name.clone();
                    let Some(dir) = &dir else {
                        let reason = "this peer does not accept files (burrow join --accept DIR)";
                        refuse(&dc, reason.into()).await;
                        return Err(FileError::Refused(reason.into()));
                    };
                    let refused = match &place {
                        Err(reason) => Some(reason.clone()),
                        Ok(place) => place.refuses(file.size, dir),
                    };
                    if let Some(reason) = refused {
                        refuse(&dc, reason.clone()).await;
                        return Err(FileError::Refused(reason));
                    }
                    // Unique per transfer: two peers may send files of the same name at once.
                    static NEXT: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Short whatever the name (a long name plus a suffix would pass 255 bytes).
                    let part =
                        PartFile(dir.join(format!(".burrow-{}-{n}.part", std::process::id())));
                    let created = match tokio::fs::File::create(&part.0).await {
                        Ok(f) => f,
                        Err(e) => {
                            refuse(&dc, format!("cannot write the file here: {e}")).await;
                            return Err(e.into());
                        }
                    };
                    let out = tokio::io::BufWriter::with_capacity(1 << 20, created);
                    bar = progress(
                        file.size,
                        &format!("receiving {}", file.name),
                        hidden_progress,
                    );
                    incoming = Some((file, out, part));
                }
                Some((file, mut out, part)) => {
                    if let Err(e) = out.flush().await {
                        refuse(&dc, format!("cannot write the file here: {e}")).await;
                        return Err(e.into());
                    }
                    drop(out);
                    let size = file.size;
                    let checked = file.finish(&message);
                    let sha256 = match checked {
                        Ok(sha) => sha,
                        Err(e) => {
                            drop(part);
                            refuse(&dc, e.to_string()).await;
                            return Err(e.into());
                        }
                    };
                    let dir = part.0.parent().map(Path::to_path_buf).unwrap_or_default();
                    let target = free_name(&dir, &name).await;
                    if let Err(e) = tokio::fs::rename(&part.0, &target).await {
                        refuse(&dc, format!("cannot save the file here: {e}")).await;
                        return Err(e.into());
                    }
                    part.keep();
                    bar.finish_and_clear();
                    let _ = dc
                        .send_text(
                            &FileMessage::Received {
                                sha256: sha256.clone(),
                            }
                            .encode(),
                        )
                        .await;
                    return Ok(Done {
                        name: name.clone(),
                        size,
                        sha256,
                        path: Some(target),
                    });
                }
            }
        }
        match &incoming {
            Some((file, _, _)) => Err(FileError::Check(file.abandoned())),
            None => Err(FileError::Channel),
        }
    }
    .await;
    bar.finish_and_clear();
    // Whatever went wrong, the sender hears a verdict (a second refusal after one sent above
    // is ignored by it), rather than waiting for one for ever.
    if let Err(e) = &result {
        if !matches!(e, FileError::Refused(_) | FileError::Channel) {
            refuse(&dc, e.to_string()).await;
        }
    }
    // On failure the part file goes with `incoming` (see `PartFile`).
    result.map_err(|e| {
        drop(incoming.take());
        (name, e)
    })
}

/// A file being received under its hidden `.part` name: removed when dropped unless kept (the
/// transfer failed, or its task was cancelled on quit: no `.part` file is ever left behind).
struct PartFile(PathBuf);

impl PartFile {
    /// The file was renamed into place: nothing to remove.
    fn keep(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Bytes an unprivileged writer may still put in `dir`'s file system, if it can be told.
fn free_space(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Tells the sender the file was refused (best effort: the channel may already be gone).
async fn refuse(dc: &Arc<dyn DataChannel>, reason: String) {
    let _ = dc
        .send_text(&FileMessage::Refused { reason }.encode())
        .await;
}

/// `dir/name`, or `dir/name (1)`, `(2)`… if taken: a received file never overwrites one.
async fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if tokio::fs::metadata(&first).await.is_err() {
        return first;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_string(), format!(".{e}")),
        _ => (name.to_string(), String::new()),
    };
    for i in 1.. {
        let candidate = dir.join(format!("{stem} ({i}){ext}"));
        if tokio::fs::metadata(&candidate).await.is_err() {
            return candidate;
        }
    }
    first
}
