// Changed block tracking for the lab simulator.
//
// This file is compiled INTO govmomi's simulator package (go build -overlay,
// see ../build.sh): the simulator dispatches SOAP methods by reflection on the
// managed object's Go type, so a QueryChangedDiskAreas method on
// *VirtualMachine is all it takes to serve the call, and Debian's tree stays
// untouched. The simulator's snapshots create no delta disks, so CBT is
// modelled by hashing every 64 KiB block of each disk's -flat.vmdk when a
// snapshot is created; a change id names one such set of hashes and a query
// diffs two of them (only false positives are possible: a hash collision aside,
// a changed block always hashes differently). The hash is two seeded maphash
// values (128 bits): Go 1.19's SHA-256 runs at ~370 MB/s here, which made a
// 4 GiB lab disk's snapshot take 4 s; these hashes never leave the process.
package simulator

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	cbtBlock = 64 << 10 // the granularity real CBT reports in
	// A real vCenter may answer with fewer areas than exist; capping the reply
	// makes clients loop on startOffset+length, as they must against vCenter.
	cbtMaxAreas = 64
)

// cbtPoint is one disk's content at one snapshot: what a change id names.
type cbtPoint struct {
	vm       types.ManagedObjectReference
	key      int32
	file     string // the disk's backing file, so a re-created disk is not mistaken for the old one
	uuid     string // tracking epoch of this disk; a reset starts a new one
	capacity int64
	hashes   []cbtHash // per block
}

// cbtHash is one block's hash; the zero value marks an all-zero block.
type cbtHash struct{ a, b uint64 }

var cbtSeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

func cbtHashBlock(b []byte) cbtHash {
	h := cbtHash{maphash.Bytes(cbtSeeds[0], b), maphash.Bytes(cbtSeeds[1], b)}
	if h == (cbtHash{}) {
		h.b = 1 // keep the zero value for zero blocks
	}
	return h
}

// cbtEpoch is the live tracking state of one disk of a VM while CBT stays on.
type cbtEpoch struct {
	uuid string
	file string
	// The VM's device object: a disk removed and added again gets the same key
	// and file name here, but a new object, and must not keep the old ids.
	dev types.BaseVirtualDevice
	seq int
}

type cbtState struct {
	mu     sync.Mutex
	epochs map[types.ManagedObjectReference]map[int32]*cbtEpoch // VM -> disk key
	snaps  map[types.ManagedObjectReference]map[int32]*cbtPoint // snapshot -> disk key
	// change id -> point; kept after its snapshot is removed, since the next
	// backup asks what changed since it.
	ids map[string]*cbtPoint
}

var cbt = &cbtState{
	epochs: map[types.ManagedObjectReference]map[int32]*cbtEpoch{},
	snaps:  map[types.ManagedObjectReference]map[int32]*cbtPoint{},
	ids:    map[string]*cbtPoint{},
}

// The registry hook must be added to the registry Create() made, which is the
// one endpoints receive (main sets Service.RegisterEndpoints).
func init() {
	RegisterEndpoint(func(_ *Service, r *Registry) { r.AddHandler(cbt) })
}

func (s *cbtState) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "SendenseCBT", Value: "cbt"}
}

func cbtEnabled(vm *VirtualMachine) bool {
	return vm.Config != nil && vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
}

// vmwareUUID formats 16 random bytes the way VMware writes a change id's UUID
// ("52 de ... 0b-4f ... 2e"), so clients do not assume a dash-only form.
func vmwareUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	h := make([]string, 16)
	for i := range b {
		h[i] = fmt.Sprintf("%02x", b[i])
	}
	return strings.Join(h[:8], " ") + "-" + strings.Join(h[8:], " ")
}

// PutObject runs inside CreateSnapshotTask (Map.Put of the new snapshot), in
// the goroutine that holds the VM's lock, before the task returns: the disks
// are hashed at the snapshot's instant.
func (s *cbtState) PutObject(item mo.Reference) {
	snap, ok := item.(*VirtualMachineSnapshot)
	if !ok {
		return
	}
	vm, ok := Map.Get(snap.Vm).(*VirtualMachine)
	if !ok || snap.Config.Hardware.Device == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !cbtEnabled(vm) {
		delete(s.epochs, vm.Self) // tracking off: the next enable starts new UUIDs
		return
	}
	// The snapshot's config is a shallow copy of the VM's: copy the disks (and
	// their backings) before writing a change id, or the VM's own devices and
	// every other snapshot's would change too.
	devices := make([]types.BaseVirtualDevice, len(snap.Config.Hardware.Device))
	copy(devices, snap.Config.Hardware.Device)
	snap.Config.Hardware.Device = devices
	epochs := s.epochs[vm.Self]
	if epochs == nil {
		epochs = map[int32]*cbtEpoch{}
		s.epochs[vm.Self] = epochs
	}
	points := map[int32]*cbtPoint{}
	for i, dev := range devices {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		flat, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue // only flat disks are tracked
		}
		d := *disk
		b := *flat
		d.Backing = &b
		devices[i] = &d

		e := epochs[d.Key]
		if e == nil || e.file != b.FileName || e.dev != dev {
			e = &cbtEpoch{uuid: vmwareUUID(), file: b.FileName, dev: dev}
			epochs[d.Key] = e
		}
		hashes, err := cbtHashDisk(vm, b.FileName, getDiskSize(&d))
		if err != nil {
			log.Printf("cbt: %s disk %d: %v (no change id minted)", vm.Self.Value, d.Key, err)
			b.ChangeId = ""
			continue
		}
		e.seq++
		b.ChangeId = fmt.Sprintf("%s/%d", e.uuid, e.seq)
		p := &cbtPoint{vm: vm.Self, key: d.Key, file: b.FileName, uuid: e.uuid,
			capacity: getDiskSize(&d), hashes: hashes}
		points[d.Key] = p
		s.ids[b.ChangeId] = p
	}
	s.snaps[snap.Self] = points
}

// UpdateObject sees every Map.Update; ReconfigVM sets changeTrackingEnabled
// without one, but its task's completion is an update, made while the VM is
// still locked: that is where turning CBT off is noticed even when no
// snapshot is taken before it is turned on again.
func (s *cbtState) UpdateObject(obj mo.Reference, changes []types.PropertyChange) {
	task, ok := obj.(*mo.Task)
	if !ok || task.Info.DescriptionId != "VirtualMachine.reconfigVm" || task.Info.Entity == nil {
		return
	}
	// The changes are already applied to obj: look at the state they left.
	if task.Info.State != types.TaskInfoStateSuccess {
		return
	}
	if vm, ok := Map.Get(*task.Info.Entity).(*VirtualMachine); ok && !cbtEnabled(vm) {
		s.mu.Lock()
		delete(s.epochs, vm.Self)
		s.mu.Unlock()
	}
}

// RemoveObject forgets a removed snapshot; its change ids stay valid.
func (s *cbtState) RemoveObject(ref types.ManagedObjectReference) {
	s.mu.Lock()
	delete(s.snaps, ref)
	s.mu.Unlock()
}

// cbtHashDisk hashes each 64 KiB block of the disk's -flat.vmdk; bytes past
// the file's end are zeroes (the simulator creates disks empty). Holes are
// skipped with SEEK_DATA/SEEK_HOLE: snapshots of big sparse lab disks would
// otherwise spend seconds reading zeroes, inside the snapshot's task.
func cbtHashDisk(vm *VirtualMachine, fileName string, capacity int64) ([]cbtHash, error) {
	p, fault := parseDatastorePath(fileName)
	if fault != nil {
		return nil, fmt.Errorf("bad datastore path %q", fileName)
	}
	ds := vm.findDatastore(p.Datastore)
	local := path.Join(ds.Info.GetDatastoreInfo().Url, strings.TrimSuffix(p.Path, ".vmdk")+"-flat.vmdk")
	n := (capacity + cbtBlock - 1) / cbtBlock
	hashes := make([]cbtHash, n)
	f, err := os.Open(local)
	if os.IsNotExist(err) {
		return hashes, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const seekData, seekHole = 3, 4 // Linux lseek whence values
	buf := make([]byte, cbtBlock)
	zero := make([]byte, cbtBlock)
	next := int64(0) // first block not hashed yet
	for next < n {
		data, err := f.Seek(next*cbtBlock, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) {
				break // only holes (or the file's end) from here: zero blocks
			}
			return nil, err
		}
		hole, err := f.Seek(data, seekHole)
		if err != nil {
			return nil, err
		}
		for i := data / cbtBlock; i < n && i*cbtBlock < hole; i++ {
			got, err := f.ReadAt(buf, i*cbtBlock)
			if err != nil && err != io.EOF {
				return nil, err
			}
			if got > 0 && !bytes.Equal(buf[:got], zero[:got]) {
				hashes[i] = cbtHashBlock(buf[:got])
			}
			next = i + 1
		}
		if next*cbtBlock < hole {
			next = n // data past the capacity is not the disk's
		}
	}
	return hashes, nil
}

func cbtFileFault(file, msg string) soap.HasFault {
	return &methods.QueryChangedDiskAreasBody{Fault_: Fault(msg, &types.FileFault{File: file})}
}

func cbtInvalid(prop, msg string) soap.HasFault {
	return &methods.QueryChangedDiskAreasBody{Fault_: Fault(msg, &types.InvalidArgument{InvalidProperty: prop})}
}

// QueryChangedDiskAreas answers for a snapshot: changeId "*" gives the
// non-zero blocks, a change id of the same disk and tracking epoch gives the
// blocks that differ since it. Areas are sorted, merged, clipped to
// [startOffset, capacity) and at most cbtMaxAreas; the reply's length says how
// far they cover, so startOffset+length is where the next call starts.
func (vm *VirtualMachine) QueryChangedDiskAreas(ctx *Context, req *types.QueryChangedDiskAreas) soap.HasFault {
	if req.Snapshot == nil {
		return cbtInvalid("snapshot", "the simulator answers QueryChangedDiskAreas for snapshots only")
	}
	cbt.mu.Lock()
	defer cbt.mu.Unlock()
	points, ok := cbt.snaps[*req.Snapshot]
	if snap, isSnap := Map.Get(*req.Snapshot).(*VirtualMachineSnapshot); !isSnap || snap.Vm != vm.Self {
		return cbtInvalid("snapshot", "no such snapshot of this VM")
	}
	if !ok {
		return cbtFileFault("", "change tracking was off when this snapshot was taken")
	}
	cur, ok := points[req.DeviceKey]
	if !ok {
		return cbtInvalid("deviceKey", fmt.Sprintf("no tracked disk %d in this snapshot", req.DeviceKey))
	}
	if req.StartOffset < 0 || req.StartOffset >= cur.capacity {
		return cbtInvalid("startOffset", fmt.Sprintf("startOffset %d is outside the disk (capacity %d)", req.StartOffset, cur.capacity))
	}
	var changed func(i int) bool
	if req.ChangeId == "*" {
		changed = func(i int) bool { return cur.hashes[i] != cbtHash{} }
	} else {
		old, ok := cbt.ids[req.ChangeId]
		if !ok || old.vm != cur.vm || old.key != cur.key || old.file != cur.file || old.uuid != cur.uuid {
			return cbtFileFault(cur.file, fmt.Sprintf("change id %q is not known for this disk", req.ChangeId))
		}
		changed = func(i int) bool {
			// A block the old point did not have (the disk grew) counts as changed.
			return i >= len(old.hashes) || old.hashes[i] != cur.hashes[i]
		}
	}
	var areas []types.DiskChangeExtent
	end := cur.capacity
	for i := int(req.StartOffset / cbtBlock); i < len(cur.hashes); i++ {
		if !changed(i) {
			continue
		}
		start := int64(i) * cbtBlock
		if start < req.StartOffset {
			start = req.StartOffset
		}
		stop := int64(i+1) * cbtBlock
		if stop > cur.capacity {
			stop = cur.capacity
		}
		if n := len(areas); n > 0 && areas[n-1].Start+areas[n-1].Length == start {
			areas[n-1].Length = stop - areas[n-1].Start
			continue
		}
		if len(areas) == cbtMaxAreas {
			// Report up to the end of the last area; the caller asks again from there.
			end = areas[len(areas)-1].Start + areas[len(areas)-1].Length
			break
		}
		areas = append(areas, types.DiskChangeExtent{Start: start, Length: stop - start})
	}
	return &methods.QueryChangedDiskAreasBody{Res: &types.QueryChangedDiskAreasResponse{
		Returnval: types.DiskChangeInfo{StartOffset: req.StartOffset, Length: end - req.StartOffset, ChangedArea: areas},
	}}
}
