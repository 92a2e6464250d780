#!/usr/bin/env bash
# Build the SELinux policy of the SELinux proof (kernel/README.md): the
# kernel's own dummy policy (scripts/selinux/mdp: one type, base_t, allowed
# everything), plus a domain req_t allowed everything but the msgq and msg
# classes: a process in req_t cannot touch any System V message queue.
# Usage: make-policy.sh LINUX_TREE OUT   (needs gcc and checkpolicy)
set -euo pipefail
k=$1 out=$2
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
gcc -o "$w/mdp" -I"$k/include/uapi" -I"$k/include" -I"$k/security/selinux/include" \
    "$k/scripts/selinux/mdp/mdp.c"
(cd "$w" && ./mdp policy.conf file_contexts)
awk '
    $0 == "type base_t;" { print; print "type req_t;"; next }
    $0 == "role base_r types { base_t };" { print "role base_r types { base_t req_t };"; next }
    { print }
    /^allow base_t base_t:[a-z0-9_]+ \*;$/ {
        c = $3; sub(/^base_t:/, "", c)
        if (c == "msgq" || c == "msg") next
        printf "allow req_t base_t:%s *;\nallow req_t req_t:%s *;\nallow base_t req_t:%s *;\n", c, c, c
    }' "$w/policy.conf" >"$w/req.conf"
# checkpolicy may know fewer policy capabilities than the kernel: drop those.
for _ in 1 2 3 4 5 6 7 8; do
    msg=$(checkpolicy -o "$out" "$w/req.conf" 2>&1 | grep -o "invalid policy capability name [a-z_0-9]*" || true)
    [[ -n "$msg" ]] || break
    sed -i "/^policycap ${msg##* };/d" "$w/req.conf"
done
checkpolicy -o "$out" "$w/req.conf" >/dev/null
