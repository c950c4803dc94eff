package netlab

import (
	"fmt"
	"net/netip"
	"strings"
)

// natTable is the nft table every router's rules live in.
const natTable = "plnat"

// natRuleset returns the nftables ruleset of a router of kind k whose public (WAN) address
// is wan and whose LAN is lan. Interfaces are "wan" (towards the internet) and "lan".
//
// The dynamic map fc ("mapped port -> host") and set rc ("mapped port . remote IP") are
// filled in postrouting after SNAT, from the conntrack reply tuple (whose destination port
// is the mapped port), so they always agree with the mapping the kernel chose.
func natRuleset(k Kind, hairpin bool, wan netip.Addr, lan netip.Prefix) string {
	var pre, post, track, fwd []string
	snat := fmt.Sprintf(`oifname "wan" snat ip to %s`, wan)
	switch k {
	case Symmetric:
		snat += " random" // a fresh random port for every remote IP:port
	case FullCone:
		pre = append(pre, fmt.Sprintf(`iifname "wan" ip daddr %s meta l4proto udp dnat ip to udp dport map @fc`, wan))
	case RestrictedCone:
		pre = append(pre, fmt.Sprintf(`iifname "wan" ip daddr %s udp dport . ip saddr @rc dnat ip to udp dport map @fc`, wan))
		track = append(track, `oifname "wan" meta l4proto udp update @rc { ct reply proto-dst . ip daddr }`)
	case UDPBlocked:
		fwd = append(fwd, "policy drop;", "ct state established,related accept",
			`iifname "lan" oifname "wan" meta l4proto tcp accept`)
	}
	if k == FullCone || k == RestrictedCone || hairpin {
		track = append(track, `oifname "wan" meta l4proto udp update @fc { ct reply proto-dst : ct original ip saddr }`)
	}
	if hairpin {
		pre = append(pre, fmt.Sprintf(`iifname "lan" ip daddr %s meta l4proto udp dnat ip to udp dport map @fc`, wan))
		post = append(post, fmt.Sprintf(`iifname "lan" oifname "lan" ip saddr %s ct status dnat snat ip to %s`, lan, wan))
	}
	post = append(post, snat)
	policy := func(rules []string) []string {
		if len(rules) > 0 && strings.HasPrefix(rules[0], "policy") {
			return rules
		}
		return append([]string{"policy accept;"}, rules...)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", natTable)
	b.WriteString("  map fc { type inet_service : ipv4_addr; flags dynamic,timeout; timeout 5m; }\n")
	b.WriteString("  set rc { type inet_service . ipv4_addr; flags dynamic,timeout; timeout 5m; }\n")
	chain := func(name, hook string, rules []string) {
		fmt.Fprintf(&b, "  chain %s {\n    %s\n", name, hook)
		for _, r := range policy(rules) {
			fmt.Fprintf(&b, "    %s\n", r)
		}
		b.WriteString("  }\n")
	}
	chain("pre_nat", "type nat hook prerouting priority dstnat;", pre)
	chain("post_nat", "type nat hook postrouting priority srcnat;", post)
	chain("track", "type filter hook postrouting priority srcnat + 10;", track)
	chain("fwd_filter", "type filter hook forward priority filter;", fwd)
	b.WriteString("}\n")
	return b.String()
}
