package embedded

import "testing"

// TestSyncAlways checks what JetStream on a started server reports: every write
// synced before it is acknowledged when asked for, nats-server's background sync
// otherwise.
func TestSyncAlways(t *testing.T) {
	for _, tc := range []struct {
		name       string
		syncAlways bool
	}{
		{"sync every write", true},
		{"sync in the background", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := Start(Options{Port: -1, StoreDir: t.TempDir(), SyncAlways: tc.syncAlways})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
			jsc := srv.JetStreamConfig()
			if jsc == nil {
				t.Fatal("JetStream is not enabled")
			}
			if jsc.SyncAlways != tc.syncAlways {
				t.Errorf("JetStream sync_always = %v, want %v", jsc.SyncAlways, tc.syncAlways)
			}
			vz, err := srv.Varz(nil)
			if err != nil {
				t.Fatal(err)
			}
			if vz.JetStream.Config == nil || vz.JetStream.Config.SyncAlways != tc.syncAlways {
				t.Errorf("varz jetstream.config.sync_always = %+v, want %v", vz.JetStream.Config, tc.syncAlways)
			}
		})
	}
}
