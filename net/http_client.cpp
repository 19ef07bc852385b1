#include "net/http_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <openssl/ssl.h>

#include <memory>
#include <optional>

namespace lowart::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

bool parse_url(std::string_view url, http_target& out) {
  std::string_view rest;
  if (url.rfind("http://", 0) == 0) {
    out.tls = false;
    out.port = 80;
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    out.tls = true;
    out.port = 443;
    rest = url.substr(8);
  } else {
    return false;
  }
  auto slash = rest.find_first_of("/?");
  auto authority = rest.substr(0, slash);
  out.path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (!out.path.empty() && out.path.front() == '?') out.path.insert(0, "/");
  if (authority.empty() || authority.find('@') != std::string_view::npos) return false;
  std::string_view host = authority;
  if (authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return false;
    host = authority.substr(1, close - 1);
    authority.remove_prefix(close + 1);
    if (!authority.empty() && authority.front() != ':') return false;
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    authority.remove_prefix(colon);
  } else {
    authority = {};
  }
  if (!authority.empty()) { // ":port"
    unsigned long port = 0;
    if (authority.size() < 2 || authority.size() > 6) return false;
    for (char c : authority.substr(1)) {
      if (c < '0' || c > '9') return false;
      port = port * 10 + static_cast<unsigned long>(c - '0');
    }
    if (port == 0 || port > 65535) return false;
    out.port = static_cast<std::uint16_t>(port);
  }
  if (host.empty()) return false;
  out.host = std::string(host);
  for (char c : out.path)
    if (c == '\r' || c == '\n' || c == ' ') return false;
  return true;
}

namespace {

asio::ssl::context& client_tls() {
  // One context for the background thread's calls: the system's trust store.
  static asio::ssl::context ctx = [] {
    asio::ssl::context c(asio::ssl::context::tls_client);
    c.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                  asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
    boost::system::error_code ec;
    c.set_default_verify_paths(ec);
    c.set_verify_mode(asio::ssl::verify_peer);
    return c;
  }();
  return ctx;
}

class fetch_op : public std::enable_shared_from_this<fetch_op> {
public:
  using plain = beast::tcp_stream;
  using secure = beast::ssl_stream<beast::tcp_stream>;

  fetch_op(asio::io_context& ioc, http_exchange&& ex, std::function<void(http_reply)>&& done)
      : ioc_(ioc), ex_(std::move(ex)), done_(std::move(done)), resolver_(ioc) {}

  void start() {
    deadline_ = std::chrono::steady_clock::now() + ex_.timeout;
    req_.method_string(ex_.method);
    req_.target(ex_.target.path);
    req_.version(11);
    bool default_port = ex_.target.port == (ex_.target.tls ? 443 : 80);
    req_.set(http::field::host,
             default_port ? ex_.target.host : ex_.target.host + ":" + std::to_string(ex_.target.port));
    req_.set(http::field::user_agent, "lowart/0.1");
    req_.set(http::field::connection, "close");
    for (const auto& [k, v] : ex_.headers)
      req_.set(k, v);
    if (!ex_.body.empty() || ex_.method == "POST" || ex_.method == "PUT") {
      req_.set(http::field::content_type, ex_.content_type);
      req_.body() = std::move(ex_.body);
      req_.prepare_payload();
    }
    resolver_.async_resolve(ex_.target.host, std::to_string(ex_.target.port),
                            [self = shared_from_this()](beast::error_code ec, asio::ip::tcp::resolver::results_type r) {
                              if (ec)
                                return self->fail("cannot resolve " + self->ex_.target.host + ": " + ec.message());
                              self->connect(r);
                            });
  }

private:
  beast::tcp_stream& tcp() { return plain_ ? *plain_ : beast::get_lowest_layer(*secure_); }
  std::chrono::steady_clock::duration left() const {
    return std::max(deadline_ - std::chrono::steady_clock::now(), std::chrono::steady_clock::duration(1));
  }

  void connect(const asio::ip::tcp::resolver::results_type& results) {
    if (ex_.target.tls)
      secure_.emplace(ioc_, client_tls());
    else
      plain_.emplace(ioc_);
    tcp().expires_after(left());
    tcp().async_connect(results, [self = shared_from_this()](beast::error_code ec, const auto&) {
      if (ec) return self->fail(ec == beast::error::timeout ? std::string("timed out connecting") : ec.message());
      if (self->secure_) return self->handshake();
      self->send();
    });
  }

  void handshake() {
    auto* ssl = secure_->native_handle();
    if (!SSL_set_tlsext_host_name(ssl, ex_.target.host.c_str())) return fail("cannot set SNI");
    secure_->set_verify_callback(asio::ssl::host_name_verification(ex_.target.host));
    secure_->async_handshake(asio::ssl::stream_base::client, [self = shared_from_this()](beast::error_code ec) {
      if (ec) return self->fail("TLS handshake failed: " + ec.message());
      self->send();
    });
  }

  template <class F> void with_stream(F&& f) {
    if (plain_)
      f(*plain_);
    else
      f(*secure_);
  }

  void send() {
    tcp().expires_after(left());
    with_stream([&](auto& s) {
      http::async_write(s, req_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        if (ec) return self->fail("sending failed: " + ec.message());
        self->receive();
      });
    });
  }

  void receive() {
    parser_.emplace();
    parser_->body_limit(ex_.max_body);
    with_stream([&](auto& s) {
      http::async_read(s, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        if (ec) return self->fail(ec == beast::error::timeout ? std::string("timed out") : ec.message());
        auto res = self->parser_->release();
        http_reply reply;
        reply.ok = true;
        reply.status = res.result_int();
        reply.content_type = std::string(res[http::field::content_type]);
        reply.body = std::move(res.body());
        self->finish(std::move(reply));
      });
    });
  }

  void fail(std::string error) {
    http_reply reply;
    reply.error = std::move(error);
    finish(std::move(reply));
  }

  void finish(http_reply reply) {
    if (!done_) return;
    auto done = std::move(done_);
    done_ = nullptr;
    beast::error_code ignored;
    if (plain_) plain_->socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    done(std::move(reply));
  }

  asio::io_context& ioc_;
  http_exchange ex_;
  std::function<void(http_reply)> done_;
  asio::ip::tcp::resolver resolver_;
  std::optional<plain> plain_;
  std::optional<secure> secure_;
  std::chrono::steady_clock::time_point deadline_;
  http::request<http::string_body> req_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
};

} // namespace

void http_fetch(asio::io_context& ioc, http_exchange exchange, std::function<void(http_reply)> done) {
  // Started on the io thread: the caller may be any thread (an actor).
  asio::post(ioc, [&ioc, ex = std::move(exchange), done = std::move(done)]() mutable {
    std::make_shared<fetch_op>(ioc, std::move(ex), std::move(done))->start();
  });
}

} // namespace lowart::net
