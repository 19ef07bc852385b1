# Turns every *.sql file of a folder into a C++ header with an ordered array of
# {name, text} pairs, so migrations ship inside the binary.
# Usage: cmake -DSRC_DIR=... -DOUT=... -P embed_files.cmake
file(GLOB files RELATIVE ${SRC_DIR} ${SRC_DIR}/*.sql)
list(SORT files)
set(body "// generated from ${SRC_DIR} by cmake/embed_files.cmake; do not edit\n#pragma once\n#include <array>\n#include <string_view>\nnamespace lowart::storage::embedded {\nstruct migration_file { std::string_view name; std::string_view sql; };\ninline constexpr std::array<migration_file, __N__> migrations{{\n")
set(n 0)
foreach(f ${files})
  file(READ ${SRC_DIR}/${f} text)
  string(APPEND body "  {\"${f}\", R\"lowart_sql(${text})lowart_sql\"},\n")
  math(EXPR n "${n}+1")
endforeach()
string(APPEND body "}};\n}\n")
string(REPLACE "__N__" "${n}" body "${body}")
file(WRITE ${OUT}.tmp "${body}")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
