#include "net/upstream.hpp"

#include "core/log.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <sys/socket.h>

namespace lowart::net {

namespace {

/// How long an idle upstream connection is kept; upstreams commonly close after 60 s+.
constexpr auto max_idle_age = std::chrono::seconds(50);

connect_failure classify(const boost::system::error_code& ec) {
  if (ec == beast::error::timeout || ec == asio::error::timed_out) return connect_failure::timeout;
  return connect_failure::refused;
}

} // namespace

bool upstream_connection::looks_alive() {
  auto& sock = tcp().socket();
  if (!sock.is_open()) return false;
  char byte;
  auto n = ::recv(sock.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  // 0: orderly close by the peer; >0: unexpected bytes on an idle connection;
  // -1 with EAGAIN: alive and quiet, which is what we want.
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

upstream_pool::upstream_pool(asio::io_context& ioc) : ioc_(ioc), resolver_(ioc), housekeeping_(ioc) {}

void upstream_pool::start_housekeeping() {
  housekeeping_.expires_after(std::chrono::seconds(1));
  housekeeping_.async_wait([this](boost::system::error_code ec) {
    if (ec) return; // the pool is going away
    prune(std::chrono::steady_clock::now());
    start_housekeeping();
  });
}

void upstream_pool::prune(std::chrono::steady_clock::time_point now) {
  for (auto it = idle_.begin(); it != idle_.end();) {
    auto& list = it->second;
    std::erase_if(list, [&](const upstream_ptr& conn) { return now - conn->idle_since >= max_idle_age; });
    it = list.empty() ? idle_.erase(it) : std::next(it);
  }
}

asio::ssl::context& upstream_pool::tls_context(const config::provider_config& settings) {
  auto key = std::make_pair(settings.verify_tls, settings.ca_file);
  auto& slot = tls_contexts_[key];
  if (!slot) {
    slot = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    slot->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
    boost::system::error_code ec;
    slot->set_default_verify_paths(ec);
    if (!settings.ca_file.empty()) {
      slot->load_verify_file(settings.ca_file, ec);
      if (ec) log::error("cannot load ca_file", {{"ca_file", settings.ca_file}, {"error", ec.message()}});
    }
    slot->set_verify_mode(settings.verify_tls ? asio::ssl::verify_peer : asio::ssl::verify_none);
  }
  return *slot;
}

void upstream_pool::acquire(const deployment& dep, std::chrono::milliseconds connect_timeout, acquire_handler done) {
  auto it = idle_.find(dep.target.pool_key);
  if (it != idle_.end()) {
    auto now = std::chrono::steady_clock::now();
    auto& list = it->second;
    while (!list.empty()) {
      auto conn = std::move(list.back());
      list.pop_back();
      auto idle = now - conn->idle_since;
      // A connection idle for under a second is taken as is; older ones are peeked first
      // (a close or reset by the upstream shows there, before the request is written).
      if (idle < max_idle_age && (idle < std::chrono::seconds(1) || conn->looks_alive())) {
        conn->reused = true;
        done(connect_failure::none, {}, std::move(conn));
        return;
      }
    }
  }
  connect(dep, connect_timeout, std::move(done));
}

void upstream_pool::connect(const deployment& dep, std::chrono::milliseconds connect_timeout, acquire_handler done) {
  const auto& settings = *dep.settings;
  const auto& target = dep.target;
  auto conn = target.tls ? std::make_unique<upstream_connection>(ioc_, tls_context(settings))
                         : std::make_unique<upstream_connection>(ioc_);
  conn->pool_key = target.pool_key;
  auto timeout = connect_timeout;

  // After TCP is up: TLS handshake (SNI, host-name verification) or done.
  auto on_connected = [this, timeout, host = target.host, verify = settings.verify_tls](upstream_ptr conn,
                                                                                        acquire_handler done) {
    conn->tcp().socket().set_option(asio::ip::tcp::no_delay(true));
    if (!conn->tls()) {
      done(connect_failure::none, {}, std::move(conn));
      return;
    }
    auto* raw = conn.get();
    raw->visit([&](auto& s) {
      using stream_t = std::decay_t<decltype(s)>;
      if constexpr (std::is_same_v<stream_t, upstream_connection::tls_stream>) {
        boost::system::error_code ec;
        auto addr = asio::ip::make_address(host, ec);
        bool ip_literal = !ec;
        auto* ssl = s.native_handle();
        if (!ip_literal) // SNI carries names only, never IP literals
          SSL_set_tlsext_host_name(ssl, host.c_str());
        if (verify) {
          // OpenSSL checks the name (or, for an IP literal, an IP address SAN) as part of
          // the chain, so a failure leaves its reason in the verify result.
          auto* param = SSL_get0_param(ssl);
          if (ip_literal) {
            X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
          } else {
            X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
          }
        }
        beast::get_lowest_layer(s).expires_after(timeout);
        s.async_handshake(asio::ssl::stream_base::client,
                          [conn = std::move(conn), done = std::move(done), ssl](boost::system::error_code ec) mutable {
                            if (ec) {
                              auto why = ec == beast::error::timeout ? connect_failure::timeout : connect_failure::tls;
                              std::string text = "TLS handshake failed: " + ec.message();
                              // Name what the verification found (IP address mismatch, self-signed, ...).
                              if (auto result = SSL_get_verify_result(ssl); result != X509_V_OK)
                                text += std::string(": ") + X509_verify_cert_error_string(result);
                              done(why, std::move(text), nullptr);
                              return;
                            }
                            done(connect_failure::none, {}, std::move(conn));
                          });
      }
    });
  };

  boost::system::error_code ec;
  auto addr = asio::ip::make_address(target.host, ec);
  if (!ec) {
    auto* raw = conn.get();
    raw->tcp().expires_after(timeout);
    raw->tcp().async_connect(
        asio::ip::tcp::endpoint(addr, target.port),
        [conn = std::move(conn), done = std::move(done), on_connected](boost::system::error_code ec) mutable {
          if (ec) {
            done(classify(ec), "connect failed: " + ec.message(), nullptr);
            return;
          }
          on_connected(std::move(conn), std::move(done));
        });
    return;
  }
  resolver_.async_resolve(
      target.host, std::to_string(target.port),
      [conn = std::move(conn), done = std::move(done), on_connected,
       timeout](boost::system::error_code ec, asio::ip::tcp::resolver::results_type results) mutable {
        if (ec) {
          done(connect_failure::resolve, "cannot resolve upstream host: " + ec.message(), nullptr);
          return;
        }
        auto* raw = conn.get();
        raw->tcp().expires_after(timeout);
        raw->tcp().async_connect(results, [conn = std::move(conn), done = std::move(done), on_connected](
                                              boost::system::error_code ec, const asio::ip::tcp::endpoint&) mutable {
          if (ec) {
            done(classify(ec), "connect failed: " + ec.message(), nullptr);
            return;
          }
          on_connected(std::move(conn), std::move(done));
        });
      });
}

void upstream_pool::release(upstream_ptr conn, int max_idle) {
  auto& list = idle_[conn->pool_key];
  if (static_cast<int>(list.size()) >= max_idle) return; // dropping it closes it
  conn->tcp().expires_never();
  conn->idle_since = std::chrono::steady_clock::now();
  list.push_back(std::move(conn));
}

} // namespace lowart::net
