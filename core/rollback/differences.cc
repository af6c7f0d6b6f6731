// What a rollback reports about the parts of a safety point it never writes back (environment,
// logs, states).
#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/rollback/internal.h"
#include "core/sources/snapshot.h"

namespace safepoint::rollback::internal {

using nlohmann::json;

std::vector<std::string> Differences(const std::map<std::string, std::string>& captured,
                                     const store::BackupRequest& current) {
  std::vector<std::string> out;
  std::string now_env;
  for (const auto& e : current.entries) {
    if (e.header.path == "environment/environment.json" && e.content) now_env = *e.content;
  }
  for (const auto& [path, content] : captured) {
    if (path == "environment/environment.json") {
      try {
        json then = json::parse(content);
        json now = now_env.empty() ? json::object() : json::parse(now_env);
        std::set<std::string> names;
        for (const auto* j : {&then, &now}) {
          if (j->contains("variables") && (*j)["variables"].is_object()) {
            for (const auto& [k, v] : (*j)["variables"].items()) names.insert(k);
          }
        }
        for (const auto& name : names) {
          json a = then.value("variables", json::object()).value(name, json());
          json b = now.value("variables", json::object()).value(name, json());
          // Values are not shown: an allow-listed variable may still hold something private.
          if (a != b)
            out.push_back("environment variable " + name + " differs from the safety point");
        }
        auto packages = [](const json& j) {
          std::map<std::string, std::string> m;
          if (!j.contains("python_packages") || !j["python_packages"].is_array()) return m;
          for (const auto& p : j["python_packages"]) {
            if (!p.is_object() || !p.contains("name") || !p["name"].is_string()) continue;
            const auto& v = p.value("version", json());
            m[p["name"].get<std::string>()] = v.is_string() ? v.get<std::string>() : "?";
          }
          return m;
        };
        auto a = packages(then);
        auto b = packages(now);
        for (const auto& [name, version] : a) {
          auto it = b.find(name);
          if (it == b.end()) {
            out.push_back("python package " + name + " " + version + " is no longer installed");
          } else if (it->second != version) {
            out.push_back("python package " + name + " was " + version + ", now " + it->second);
          }
        }
        for (const auto& [name, version] : b) {
          if (a.count(name) == 0) {
            out.push_back("python package " + name + " " + version + " was installed since");
          }
        }
      } catch (const json::exception&) {
        out.emplace_back("environment/environment.json could not be compared");
      }
    } else if (path.starts_with("logs/")) {
      auto lines = std::count(content.begin(), content.end(), '\n');
      out.push_back(path + ": " + std::to_string(lines) +
                    " log lines kept in the safety point (logs are never written back)");
    } else if (path == snapshot::kZigbee2MqttBackupPath) {
      out.push_back(path +
                    ": Zigbee2MQTT's own backup kept in the safety point (not written back; "
                    "restore it in Zigbee2MQTT after `safepoint extract`)");
    } else if (path.starts_with("state/")) {
      out.push_back(path + ": entity states recorded in the safety point (" +
                    std::to_string(content.size()) +
                    " bytes); live states come from the devices and are not written back");
    }
  }
  return out;
}

}  // namespace safepoint::rollback::internal
