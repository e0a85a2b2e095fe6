package ownership

// score is the rendezvous (highest random weight) hash of a node and an
// instance: the live instance with the highest score is the node's preferred
// owner. Every replica computes the same scores, and a replica joining or
// leaving changes the preferred owner only of the nodes it wins or held.
func score(node, instance string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(node); i++ {
		h ^= uint64(node[i])
		h *= prime
	}
	// 0xff cannot occur in a valid name, so "a"+"bc" and "ab"+"c" differ.
	h ^= 0xff
	h *= prime
	for i := 0; i < len(instance); i++ {
		h ^= uint64(instance[i])
		h *= prime
	}
	// FNV-1a mixes its last bytes weakly; the splitmix64 finaliser makes
	// the scores of instances that differ in one character independent.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// preferred reports whether self has the highest score for node among self
// and peers (ties, practically impossible, go to the smaller instance id).
func preferred[V any](node, self string, peers map[string]V) bool {
	best := score(node, self)
	for p := range peers {
		if s := score(node, p); s > best || s == best && p < self {
			return false
		}
	}
	return true
}

// share is a replica's fair share of nodes: ceil(nodes/replicas).
func share(nodes, replicas int) int {
	if replicas < 1 {
		replicas = 1
	}
	return (nodes + replicas - 1) / replicas
}
