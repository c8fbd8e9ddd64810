//! tokio UDP echo server (current-thread runtime: one core, pinned by the bench script): one
//! task receiving into one buffer and sending each datagram back, as a tokio user writes it.
use tokio::net::UdpSocket;

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7201".into());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let s = UdpSocket::bind(&addr).await?;
        println!("tokio udp echo on {addr}");
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, from) = s.recv_from(&mut buf).await?;
            let _ = s.send_to(&buf[..n], from).await;
        }
    })
}
