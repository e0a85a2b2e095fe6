package chartcheck

import (
	"bytes"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// fileConfig mirrors the keys of the amibus configuration file (internal/config; the
// key list is in the README's configuration reference). The rendered ConfigMaps
// are decoded into it with unknown keys refused, as the programs do, so a key the
// chart misspells fails here rather than at a pod's start. It is a copy: a key
// added to internal/config must be added here before the chart may render it.
type fileConfig struct {
	NATS struct {
		URL           string `yaml:"url"`
		SubjectPrefix string `yaml:"subject_prefix"`
		Name          string `yaml:"name"`
		Token         string `yaml:"token"`
		User          string `yaml:"user"`
		Password      string `yaml:"password"`
		NKeyFile      string `yaml:"nkey_file"`
		CredsFile     string `yaml:"creds_file"`
		TLS           struct {
			CAFile             string `yaml:"ca_file"`
			CertFile           string `yaml:"cert_file"`
			KeyFile            string `yaml:"key_file"`
			InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
		} `yaml:"tls"`
		Embedded struct {
			Listen  string `yaml:"listen"`
			DataDir string `yaml:"data_dir"`
		} `yaml:"embedded"`
	} `yaml:"nats"`
	Stream struct {
		Name            string `yaml:"name"`
		MaxAge          string `yaml:"max_age"`
		MaxBytes        int64  `yaml:"max_bytes"`
		Storage         string `yaml:"storage"`
		Replicas        int    `yaml:"replicas"`
		DuplicateWindow string `yaml:"duplicate_window"`
	} `yaml:"stream"`
	Nodes   []fileNode `yaml:"nodes"`
	Session struct {
		DialTimeout        string `yaml:"dial_timeout"`
		BannerTimeout      string `yaml:"banner_timeout"`
		LoginTimeout       string `yaml:"login_timeout"`
		PingInterval       string `yaml:"ping_interval"`
		PingTimeout        string `yaml:"ping_timeout"`
		BackoffInitial     string `yaml:"backoff_initial"`
		BackoffMax         string `yaml:"backoff_max"`
		AuthFailureBackoff string `yaml:"auth_failure_backoff"`
		HealthyAfter       string `yaml:"healthy_after"`
		MaxConcurrentDials int    `yaml:"max_concurrent_dials"`
		MaxMessageBytes    int    `yaml:"max_message_bytes"`
		MaxHeaders         int    `yaml:"max_headers"`
	} `yaml:"session"`
	HTTP struct {
		Listen string `yaml:"listen"`
	} `yaml:"http"`
	Log struct {
		Level string `yaml:"level"`
	} `yaml:"log"`
	Ingest struct {
		BufferEvents     int      `yaml:"buffer_events"`
		BufferBytes      int64    `yaml:"buffer_bytes"`
		Exclude          []string `yaml:"exclude"`
		Include          []string `yaml:"include"`
		RedactFields     []string `yaml:"redact_fields"`
		SnapshotActions  []string `yaml:"snapshot_actions"`
		SnapshotMaxItems int      `yaml:"snapshot_max_items"`
		SnapshotInterval string   `yaml:"snapshot_interval"`
		MaxInflight      int      `yaml:"max_inflight"`
		DrainTimeout     string   `yaml:"drain_timeout"`
		Events           string   `yaml:"events"`
		HA               struct {
			Enabled bool   `yaml:"enabled"`
			Bucket  string `yaml:"bucket"`
			TTL     string `yaml:"ttl"`
		} `yaml:"ha"`
	} `yaml:"ingest"`
	Actor struct {
		Allow            []string `yaml:"allow"`
		Deny             []string `yaml:"deny"`
		DefaultTimeoutMS int      `yaml:"default_timeout_ms"`
		MaxTimeoutMS     int      `yaml:"max_timeout_ms"`
		MaxPending       int      `yaml:"max_pending"`
		MaxAnswerBytes   int      `yaml:"max_answer_bytes"`
		MaxListEvents    int      `yaml:"max_list_events"`
		QueueGroup       string   `yaml:"queue_group"`
		MaxRequestBytes  int      `yaml:"max_request_bytes"`
		SessionsPerNode  int      `yaml:"sessions_per_node"`
		ExtraSessionIdle string   `yaml:"extra_session_idle"`
		BodyForm         *bool    `yaml:"body_form"`
	} `yaml:"actor"`
	State struct {
		Bucket          string `yaml:"bucket"`
		Replicas        int    `yaml:"replicas"`
		Storage         string `yaml:"storage"`
		History         int    `yaml:"history"`
		FlushInterval   string `yaml:"flush_interval"`
		MaxRequestBytes int    `yaml:"max_request_bytes"`
		MaxReplayEvents int    `yaml:"max_replay_events"`
		HA              struct {
			Enabled bool   `yaml:"enabled"`
			Bucket  string `yaml:"bucket"`
			TTL     string `yaml:"ttl"`
		} `yaml:"ha"`
	} `yaml:"state"`
}

type fileNode struct {
	Name     string `yaml:"name"`
	Address  string `yaml:"address"`
	Username string `yaml:"username"`
	// The chart must never set Secret or ActorSecret; they are here so that the
	// check can say so instead of reporting an unknown key.
	Secret     string `yaml:"secret"`
	SecretFile string `yaml:"secret_file"`
	Auth       string `yaml:"auth"`
	TLS        struct {
		Enabled            bool   `yaml:"enabled"`
		CAFile             string `yaml:"ca_file"`
		ServerName         string `yaml:"server_name"`
		InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	} `yaml:"tls"`
	ActorUsername   string   `yaml:"actor_username"`
	ActorSecret     string   `yaml:"actor_secret"`
	ActorSecretFile string   `yaml:"actor_secret_file"`
	Include         []string `yaml:"include"`
	Exclude         []string `yaml:"exclude"`
}

// parseConfig decodes a rendered configuration file, refusing unknown keys, and
// returns the top-level keys present, in order.
func parseConfig(text string) (*fileConfig, []string, error) {
	var cfg fileConfig
	dec := yaml.NewDecoder(bytes.NewReader([]byte(text)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, nil, err
	}
	var top yaml.Node
	if err := yaml.Unmarshal([]byte(text), &top); err != nil {
		return nil, nil, err
	}
	if len(top.Content) != 1 || top.Content[0].Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("configuration is not a YAML mapping")
	}
	var keys []string
	m := top.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		keys = append(keys, m.Content[i].Value)
	}
	return &cfg, keys, nil
}
