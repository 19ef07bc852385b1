// The single translation unit that compiles Boost.Asio, Asio-SSL and Boost.Beast.
// Every other TU sees only declarations (BOOST_*_SEPARATE_COMPILATION), which keeps
// the cold build on two cores short.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
