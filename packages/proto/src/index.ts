export * from './gen/imgbuilder.js';
export {
  WorkspaceInitializer,
  CompositeInitializer,
  FileDownloadInitializer,
  FileDownloadInitializer_FileInfo,
  EmptyInitializer,
  GitInitializer,
  GitConfig,
  SnapshotInitializer,
  PrebuildInitializer,
  FromBackupInitializer,
  GitStatus,
  CloneTargetMode,
  GitAuthMethod,
} from './gen/content-service-api/initializer.js';
export {
  UploadRequest,
  UploadMetadata,
  UploadResponse,
  SnapshotUploadService,
  SnapshotUploadClient,
  type SnapshotUploadServer,
} from './gen/upload.js';
export {
  CancelBuildRequest,
  CancelBuildResponse,
  BuildControlService,
  BuildControlClient,
  type BuildControlServer,
} from './gen/control.js';
export {
  CacheRef,
  ListCacheRefsRequest,
  ListCacheRefsResponse,
  PruneCacheRequest,
  PruneCacheResponse,
  BuildCacheService,
  BuildCacheClient,
  type BuildCacheServer,
} from './gen/cache.js';
