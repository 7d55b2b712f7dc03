// Passwords never reach output, logs or errors: mask_password hides them in both conninfo forms.
#include <gtest/gtest.h>

#include "real_pool/live.hpp"

namespace poolsim::real_pool {
namespace {

TEST(MaskPassword, HidesPasswordsInEveryForm) {
  const std::pair<const char*, const char*> cases[] = {
      {"host=1 password=secret dbname=x", "host=1 password=**** dbname=x"},
      {"host=1 PASSWORD = 'se cr\\'et' dbname=x", "host=1 PASSWORD = **** dbname=x"},
      {"postgresql://app:s3cret@db:5432/app", "postgresql://app:****@db:5432/app"},
      {"password=a password=b", "password=**** password=****"},
  };
  for (const auto& [conninfo, masked] : cases) EXPECT_EQ(mask_password(conninfo), masked);
}

TEST(MaskPassword, LeavesEverythingElseAlone) {
  EXPECT_EQ(mask_password("postgres://app@db/app"), "postgres://app@db/app");
  EXPECT_EQ(mask_password("host=1 user=password"), "host=1 user=password");
  EXPECT_EQ(mask_password(""), "");
}

}  // namespace
}  // namespace poolsim::real_pool
