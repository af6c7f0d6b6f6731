#include "mqtt/diagnosis.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>

namespace safepoint::mqtt::internal {
namespace {

using std::chrono::milliseconds;

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();  // NOLINT(google-runtime-int): OpenSSL's type
  if (code == 0) return "unknown TLS error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

}  // namespace

bool Readable(const std::string& path) {
  std::ifstream in(path);
  return in.good();
}

Status DiagnoseTls(const mqtt_names::BrokerUrl& addr, const ClientOptions::Tls& tls,
                   milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(addr.host.c_str(), addr.port.c_str(), &hints, &found); rc != 0) {
    return Fail(ErrorCode::kIo, std::string("cannot resolve host: ") + ::gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> ai(found, &::freeaddrinfo);
  const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) return Fail(ErrorCode::kIo, std::string("socket: ") + std::strerror(errno));
  std::unique_ptr<int, void (*)(int*)> fd_guard(new int(fd), [](int* p) {
    ::close(*p);
    delete p;
  });
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    return Fail(ErrorCode::kIo, std::string("cannot reach ") + addr.host + ":" + addr.port + ": " +
                                    std::strerror(errno));
  }

  std::unique_ptr<SSL_CTX, decltype(&::SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                          &::SSL_CTX_free);
  if (!ctx) return Fail(ErrorCode::kIo, OpenSslError());
  if (!tls.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx.get(), tls.ca_file.c_str(), nullptr) != 1) {
      return Fail(ErrorCode::kIo, "cannot load CA file " + tls.ca_file + ": " + OpenSslError());
    }
  } else {
    SSL_CTX_set_default_verify_paths(ctx.get());
  }
  if (!tls.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.cert_file.c_str()) != 1) {
      return Fail(ErrorCode::kIo,
                  "cannot load client certificate " + tls.cert_file + ": " + OpenSslError());
    }
    const std::string& key = tls.key_file.empty() ? tls.cert_file : tls.key_file;
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1) {
      return Fail(ErrorCode::kIo, "cannot load client key " + key + ": " + OpenSslError());
    }
  }
  SSL_CTX_set_verify(ctx.get(), tls.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  std::unique_ptr<SSL, decltype(&::SSL_free)> ssl(SSL_new(ctx.get()), &::SSL_free);
  if (!ssl) return Fail(ErrorCode::kIo, OpenSslError());
  SSL_set_fd(ssl.get(), fd);
  in6_addr ip_buf{};
  const bool is_ip = ::inet_pton(AF_INET, addr.host.c_str(), &ip_buf) == 1 ||
                     ::inet_pton(AF_INET6, addr.host.c_str(), &ip_buf) == 1;
  if (!is_ip) SSL_set_tlsext_host_name(ssl.get(), addr.host.c_str());
  if (tls.verify) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
    if (is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(param, addr.host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, addr.host.c_str(), 0);
    }
  }
  ERR_clear_error();
  if (SSL_connect(ssl.get()) != 1) {
    const long verify = SSL_get_verify_result(ssl.get());  // NOLINT(google-runtime-int)
    if (tls.verify && verify != X509_V_OK) {
      return Fail(ErrorCode::kIo, std::string("server certificate rejected: ") +
                                      X509_verify_cert_error_string(verify));
    }
    return Fail(ErrorCode::kIo, "TLS handshake failed: " + OpenSslError());
  }
  SSL_shutdown(ssl.get());
  return {};
}

std::string ConnackReason(int code) {
  switch (code) {
    case 1:
      return "unacceptable protocol version";
    case 2:
      return "client identifier rejected";
    case 3:
      return "server unavailable";
    case 4:
      return "bad user name or password";
    case 5:
      return "not authorized";
    case 0x80:
      return "unspecified error";
    case 0x81:
      return "malformed packet";
    case 0x82:
      return "protocol error";
    case 0x84:
      return "unsupported protocol version";
    case 0x85:
      return "client identifier not valid";
    case 0x86:
      return "bad user name or password";
    case 0x87:
      return "not authorized";
    case 0x88:
      return "server unavailable";
    case 0x89:
      return "server busy";
    case 0x8A:
      return "banned";
    case 0x8C:
      return "bad authentication method";
    case 0x95:
      return "packet too large";
    case 0x97:
      return "quota exceeded";
    case 0x9F:
      return "connection rate exceeded";
    default:
      return {};
  }
}

bool IsAuthRefusal(int code) { return code == 4 || code == 5 || code == 0x86 || code == 0x87; }

}  // namespace safepoint::mqtt::internal
