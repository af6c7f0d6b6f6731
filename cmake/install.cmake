# Install rules for the service files next to the binary (service/CMakeLists.txt installs that):
#   <prefix>/lib/systemd/system/safepoint.service   the hardened systemd unit
#   <prefix>/share/safepoint/safepoint.example.yaml  every configuration key with its default
# The unit's ExecStart names <CMAKE_INSTALL_PREFIX>/bin/safepoint as configured; staging with
# `cmake --install build --prefix DIR` keeps it (the prefix the package will live in).
# The example is never installed as /etc/safepoint/safepoint.yaml: an upgrade must not overwrite
# a user's configuration. docs/deployment.md shows the copy step.
include(GNUInstallDirs)

set(_safepoint_unit_in ${PROJECT_SOURCE_DIR}/deploy/safepoint.service)
set(_safepoint_unit_out ${PROJECT_BINARY_DIR}/deploy/safepoint.service)
file(READ ${_safepoint_unit_in} _safepoint_unit)
string(REPLACE "/usr/local/bin/safepoint" "${CMAKE_INSTALL_FULL_BINDIR}/safepoint"
  _safepoint_unit "${_safepoint_unit}")
file(CONFIGURE OUTPUT ${_safepoint_unit_out} CONTENT "${_safepoint_unit}" @ONLY)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_safepoint_unit_in})

install(FILES ${_safepoint_unit_out} DESTINATION lib/systemd/system)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/safepoint.example.yaml
  DESTINATION ${CMAKE_INSTALL_DATADIR}/safepoint)
