# Writes a C++ header holding the bytes of INPUT as a string constant NAME.
file(READ "${INPUT}" content HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" escaped "${content}")
file(WRITE "${OUTPUT}.tmp"
  "#pragma once\n// Generated from ${INPUT}; do not edit.\nnamespace llima {\n"
  "inline constexpr char ${NAME}[] = \"${escaped}\";\n}  // namespace llima\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
