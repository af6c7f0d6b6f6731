#include "service/cli.h"

int main(int argc, char** argv) { return safepoint::service::RunCli(argc, argv); }
