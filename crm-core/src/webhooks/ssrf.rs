//! The SSRF guard: webhook URLs are chosen by users, so crm never lets one reach the
//! host's own network. A URL must be `http` or `https` without credentials, and every
//! address its host resolves to must be public: not loopback, private, link-local,
//! unique-local, multicast, documentation, CGNAT, benchmarking, reserved or
//! unspecified, with IPv4-mapped IPv6 addresses judged as the IPv4 address they carry.
//! One refused address refuses the host (a name that resolves to a public and a private
//! address is the classic rebinding trick). Networks on the allow-list pass (tests
//! allow 127.0.0.1; internal deployments may allow their own ranges).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network, `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    /// `10.0.0.0/8`, `::1/128`, or a bare address (a single host).
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = canonical(
            IpAddr::from_str(addr.trim()).map_err(|_| format!("{s:?} is not an IP network"))?,
        );
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries; anything else as is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a >= 240
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || (a == 198 && (b == 18 || b == 19))) // benchmarking
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated) fec0::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard 100::/64
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64: reaches IPv4 space
        || (s[0] == 0x2002) // 6to4: reaches IPv4 space
        || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
}

/// Whether `ip` is a public address a webhook may be sent to.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

/// Whether `ip` may be connected to: public, or inside an allowed network.
pub fn allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    is_public(ip) || allow.iter().any(|n| n.contains(ip))
}

/// Checks a webhook URL's shape: `http`/`https`, a host, no user or password, at most
/// 2,048 characters. Resolution is checked separately, at create and at delivery.
pub fn check_url_shape(raw: &str) -> Result<url::Url, String> {
    if raw.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    let u =
        url::Url::parse(raw.trim()).map_err(|_| "must be an absolute http(s) URL".to_string())?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("must use http or https".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not contain credentials".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("must have a host".into());
    }
    Ok(u)
}

/// Resolves the URL's host and refuses it unless every address is allowed. Returns
/// the addresses (with the URL's port) to connect to, so no second lookup happens.
pub async fn resolve_checked(
    u: &url::Url,
    allow: &[IpNet],
) -> Result<Vec<std::net::SocketAddr>, String> {
    let port = u.port_or_known_default().unwrap_or(443);
    let addrs: Vec<std::net::SocketAddr> = match u.host() {
        Some(url::Host::Ipv4(ip)) => vec![(IpAddr::V4(ip), port).into()],
        Some(url::Host::Ipv6(ip)) => vec![(IpAddr::V6(ip), port).into()],
        Some(url::Host::Domain(d)) => tokio::net::lookup_host((d, port))
            .await
            .map_err(|_| "host does not resolve".to_owned())?
            .collect(),
        None => return Err("must have a host".into()),
    };
    if addrs.is_empty() {
        return Err("host does not resolve".into());
    }
    // The message never names the address: a tenant must not learn what the
    // operator's DNS answers for internal names.
    if addrs.iter().any(|a| !allowed(a.ip(), allow)) {
        return Err("is not a public address".into());
    }
    Ok(addrs)
}

/// The guard's refusal of a name, in a client's error chain (`ssrf_refused`).
#[cfg(any(feature = "webhooks", feature = "oidc"))]
#[derive(Debug)]
pub(crate) struct Refused(String);

#[cfg(any(feature = "webhooks", feature = "oidc"))]
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves to a refused address", self.0)
    }
}

#[cfg(any(feature = "webhooks", feature = "oidc"))]
impl std::error::Error for Refused {}

/// A DNS resolver that refuses names resolving to non-public addresses, so the
/// connection goes to the checked address and no second lookup can differ.
#[cfg(any(feature = "webhooks", feature = "oidc"))]
struct GuardedResolver {
    allow: std::sync::Arc<Vec<IpNet>>,
}

#[cfg(any(feature = "webhooks", feature = "oidc"))]
impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() || addrs.iter().any(|a| !allowed(a.ip(), &allow)) {
                return Err(Box::new(Refused(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

/// An HTTP client for URLs someone other than the operator chose (webhook
/// endpoints, a workspace's sign-in provider): `timeout` per request, no proxy, no
/// redirects, and every name resolved through the guard (`allow` as its
/// allow-list). A literal IP address in a URL is not resolved: its callers check
/// it first (webhooks with [`resolve_checked`], OpenID Connect with [`allowed`]
/// on the URL's literal host).
#[cfg(any(feature = "webhooks", feature = "oidc"))]
pub(crate) fn guarded_client(
    timeout: std::time::Duration,
    allow: &[IpNet],
    user_agent: &'static str,
) -> crate::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .no_proxy()
        .dns_resolver(std::sync::Arc::new(GuardedResolver {
            allow: std::sync::Arc::new(allow.to_vec()),
        }))
        .user_agent(user_agent)
        .build()
        .map_err(|_| crate::Error::Config("could not build the HTTP client".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn refused_ranges() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip(s)), "{s} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip(s)), "{s} is public");
        }
    }

    #[test]
    fn allow_list() {
        let allow: Vec<IpNet> = vec![
            "127.0.0.1".parse().expect("net"),
            "10.0.0.0/8".parse().expect("net"),
        ];
        assert!(allowed(ip("127.0.0.1"), &allow));
        assert!(allowed(ip("::ffff:127.0.0.1"), &allow));
        assert!(allowed(ip("10.200.0.1"), &allow));
        assert!(!allowed(ip("127.0.0.2"), &allow));
        assert!(!allowed(ip("192.168.0.1"), &allow));
        for bad in ["", "10.0.0.0/33", "nope/8", "::1/129"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn url_shapes() {
        assert!(check_url_shape("https://hooks.example.com/crm?x=1").is_ok());
        for bad in [
            "",
            "ftp://example.com",
            "https://user:pw@example.com",
            "https://user@example.com",
            "example.com/x",
            "http://",
            "file:///etc/passwd",
            "javascript:alert(1)",
        ] {
            assert!(check_url_shape(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn resolution_is_checked() {
        let u = check_url_shape("http://localhost:8080/hook").expect("shape");
        assert!(
            resolve_checked(&u, &[]).await.is_err(),
            "localhost is refused by default"
        );
        let allow = [
            "127.0.0.1".parse().expect("net"),
            "::1".parse().expect("net"),
        ];
        assert!(resolve_checked(&u, &allow).await.is_ok());
        let literal = check_url_shape("http://[::ffff:7f00:1]/").expect("shape");
        assert!(resolve_checked(&literal, &[]).await.is_err());
        let private = check_url_shape("http://169.254.169.254/latest/meta-data").expect("shape");
        assert!(resolve_checked(&private, &[]).await.is_err());
    }
}
