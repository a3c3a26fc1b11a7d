// Command-line parsing shared by the programs: CLI11, with its errors in the programs' own
// one-line form ("onebit-train: error: --config: File does not exist: x.yaml") and exit code 2,
// the usual code for a usage error. --help still prints the help and exits 0.
#pragma once
#include <CLI/CLI.hpp>
#include <iostream>

namespace onebit::cli {

// -1 when the program should go on; else the exit code to return.
inline int parse(const char* prog, CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << prog << ": error: " << e.what() << " (" << prog << " --help lists the options)" << std::endl;
    return 2;
  }
  return -1;
}

}  // namespace onebit::cli

// In a program's body: parse, or return the exit code (help, or a usage error).
#define ONEBIT_PARSE(prog, app, argc, argv)                                  \
  do {                                                                       \
    if (const int onebit_rc_ = ::onebit::cli::parse(prog, app, argc, argv); \
        onebit_rc_ >= 0)                                                     \
      return onebit_rc_;                                                     \
  } while (0)
