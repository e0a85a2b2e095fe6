package session

import (
	"bufio"
	"strings"
)

// readAction reads one action's headers as key/value pairs, or returns
// false at EOF.
func readAction(br *bufio.Reader) ([][2]string, bool) {
	var hs [][2]string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, false
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if len(hs) == 0 {
				continue
			}
			return hs, true
		}
		k, v, _ := strings.Cut(line, ": ")
		hs = append(hs, [2]string{k, v})
	}
}

func header(hs [][2]string, key string) string {
	for _, h := range hs {
		if strings.EqualFold(h[0], key) {
			return h[1]
		}
	}
	return ""
}
