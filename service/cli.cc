#include "service/cli.h"

#include <cstdio>

namespace safepoint::service {

int RunCli(int /*argc*/, char** /*argv*/) {
  std::puts("safepoint");
  return 0;
}

}  // namespace safepoint::service
