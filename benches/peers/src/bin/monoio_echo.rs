//! monoio echo server (io_uring driver, one thread), as in monoio's own echo example.
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7002".into());
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().with_entries(1024).build().expect("io_uring runtime");
    rt.block_on(async move {
        let l = TcpListener::bind(&addr).expect("bind");
        println!("monoio echo listening on {addr}");
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            let _ = s.set_nodelay(true);
            monoio::spawn(echo(s));
        }
    });
}

async fn echo(mut s: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let (res, b) = s.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (res, b) = s.write_all(buf).await;
        buf = b;
        if res.is_err() {
            return;
        }
        buf.clear();
    }
}
